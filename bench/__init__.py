"""Benchmarks and the chaos driver (``make bench``, ``make chaos``)."""
