"""Benchmarks and size reports for the engine (run as `python -m bench.<name>`)."""
