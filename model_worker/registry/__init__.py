"""The worker registry: model workers announce themselves and their hot sessions; clients route sessions by it."""

from model_worker.registry.heartbeat import Heartbeat
from model_worker.registry.pool import NoWorker, WorkerPool
from model_worker.registry.records import WorkerRecord
from model_worker.registry.registry import LocalRegistry, RedisRegistry, Registry, open_registry

__all__ = ["Heartbeat", "LocalRegistry", "NoWorker", "RedisRegistry", "Registry", "WorkerPool", "WorkerRecord",
           "open_registry"]
