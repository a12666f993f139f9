"""Benchmark harness (issue 7): `python -m bench.run` measures the in-process limit, our service and Infinity."""
