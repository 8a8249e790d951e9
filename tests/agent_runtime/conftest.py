"""Agent runtime tests that need real parts use tests/realparts.py."""

from realparts import broker_url, database_url, model_worker  # noqa: F401 - fixtures
