"""Analyses of a model or run: sensitivity, tuner, diagnosis, scaling."""
