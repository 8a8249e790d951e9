"""Torch twins of every kernel op: the executable spec, and the CPU path."""
