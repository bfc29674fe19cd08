"""Benchmarks of the data path against the compute limit (`python -m benchmarks.run`)."""
