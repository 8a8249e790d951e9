"""Torch twins of every kernel op: the executable spec, and the path for shapes and devices no kernel covers."""
