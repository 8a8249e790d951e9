"""Moved to `foundation.clients.worker` (the clients live below every service, so a caller needs nothing of the
worker's engine). This name stays so existing imports, `model_worker.client.<module>` included, keep working."""

import importlib
import sys

from foundation.clients.worker import *  # noqa: F403 - the alias re-exports the whole public surface
from foundation.clients.worker import __all__  # noqa: F401

for _module in ("async_client", "base", "convert", "errors", "policy", "requests", "settings", "sync_client", "types"):
    sys.modules[f"{__name__}.{_module}"] = importlib.import_module(f"foundation.clients.worker.{_module}")
