"""Measurement: quality, latency, environment, energy, compute and operator profiles."""
