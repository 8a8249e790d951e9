"""The worker registry: model workers announce themselves and their hot sessions; clients route sessions by it."""

from foundation.registry.heartbeat import Heartbeat
from foundation.registry.pool import NoWorker, WorkerPool
from foundation.registry.records import WorkerRecord
from foundation.registry.registry import LocalRegistry, RedisRegistry, Registry, open_registry

__all__ = ["Heartbeat", "LocalRegistry", "NoWorker", "RedisRegistry", "Registry", "WorkerPool", "WorkerRecord",
           "open_registry"]
