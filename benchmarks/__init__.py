"""Measurements behind the figures in docs/, run as modules: python -m benchmarks.quality."""
