"""The chat model's routes to its model workers: `foundation.registry.WorkerPool`s over one registry (the configured
addresses, or a Redis registry the workers heartbeat to), so a session goes to the worker holding it and new work to
the least loaded. One pool of blocking clients, and one of asyncio clients per event loop: a grpc.aio channel
belongs to the loop it was made in."""

from __future__ import annotations

import asyncio
import threading

from foundation.clients.worker import AsyncWorkerClient, WorkerClient
from foundation.registry.pool import WorkerPool
from foundation.registry.registry import open_registry


class WorkerConnections:
    """`target`: "HOST:PORT", or several comma-separated; `registry_url`: redis://... (then `target` may be empty).
    Channels open lazily, on the first call."""

    def __init__(self, target: str, registry_url: str | None, *, api_key: str | None, timeout: float | None,
                 retries: int) -> None:
        addresses = [a.strip() for a in target.split(",") if a.strip()]
        if not addresses and not registry_url:
            raise ValueError("target: a worker address HOST:PORT (or several, comma-separated), or a registry_url")
        self._registry = open_registry(registry_url, addresses)
        self._options = {"api_key": api_key, "timeout": timeout, "retries": retries}
        self._blocking: WorkerPool[WorkerClient] | None = None
        self._by_loop: dict[asyncio.AbstractEventLoop, WorkerPool[AsyncWorkerClient]] = {}
        self._lock = threading.Lock()

    def blocking(self) -> WorkerPool[WorkerClient]:
        with self._lock:
            if self._blocking is None:
                self._blocking = WorkerPool(self._registry, lambda address: WorkerClient(address, **self._options))
            return self._blocking

    def asyncio(self) -> WorkerPool[AsyncWorkerClient]:
        """The pool of the running event loop's clients. Pools of loops since closed are dropped (their channels hold
        their loop, so nothing weaker than this would let them go)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            for closed in [other for other in self._by_loop if other.is_closed()]:
                del self._by_loop[closed]
            pool = self._by_loop.get(loop)
            if pool is None:
                pool = self._by_loop[loop] = WorkerPool(
                    self._registry, lambda address: AsyncWorkerClient(address, **self._options))
            return pool

    def close(self) -> None:
        """Close the blocking clients and the registry (asyncio clients close with their loop's `aclose`)."""
        with self._lock:
            blocking, self._blocking = self._blocking, None
        for client in (blocking.clients.values() if blocking else ()):
            client.close()
        self._registry.close()

    async def aclose(self) -> None:
        """Close the running loop's asyncio clients."""
        with self._lock:
            pool = self._by_loop.pop(asyncio.get_running_loop(), None)
        for client in (pool.clients.values() if pool else ()):
            await client.close()
