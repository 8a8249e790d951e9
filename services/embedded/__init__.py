"""The whole platform on one machine, on embedded defaults (`python -m services.embedded`)."""
