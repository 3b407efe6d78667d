"""Benchmarks: each script prints one line of figures."""
