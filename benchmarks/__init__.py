"""The benchmark harness (`make bench`): runs the DESIGN.md targets and writes BENCHMARKS.md."""
