"""The jobs tests run on real parts (tests/realparts.py)."""

from realparts import broker_url, database_url, model_worker  # noqa: F401 - fixtures
