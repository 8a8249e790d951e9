"""Clients of the model workers a caller (agent runtime, jobs runner, gateway) routes to.

A session goes to the worker that holds it hot: its compressed KV is in that worker's memory, so a turn costs its new
tokens only. When that worker is gone (no heartbeat, or a call to it failed UNAVAILABLE) or overloaded, the session
goes to the least loaded live worker, which resumes it from the shared warm or cold tier (still no re-prefill, only a
state read). New sessions and stateless requests go to the least loaded worker, equal loads taken in turn.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import threading
import time
from collections.abc import Callable, Collection
from typing import Generic, TypeVar

from foundation.clients.worker.errors import Unavailable
from foundation.registry.records import WorkerRecord
from foundation.registry.registry import LocalRegistry, Registry, open_registry

C = TypeVar("C")


class NoWorker(Unavailable):
    """No live model worker to route to (all gone, or all excluded after failures)."""


class WorkerPool(Generic[C]):
    def __init__(self, registry: Registry, connect: Callable[[str], C], *, overloaded_at: float = 1.0,
                 cooldown_s: float = 10.0, session_ttl_s: float = 3600.0) -> None:
        """`overloaded_at`: a holder whose load (requests per batch slot) reaches this loses its sessions to a less
        loaded worker. `cooldown_s`: how long a worker that failed a call is skipped by this process."""
        self.registry, self._connect = registry, connect
        self.overloaded_at, self.cooldown_s, self.session_ttl_s = overloaded_at, cooldown_s, session_ttl_s
        self.clients: dict[str, C] = {}
        self._down: dict[str, float] = {}
        self._turn = itertools.count()
        self._lock = threading.Lock()

    @classmethod
    def of(cls, client) -> WorkerPool:
        """A pool of one connected client (tests, benchmarks, embedding)."""
        pool = cls(LocalRegistry([client.target]), lambda address: client)
        pool.clients[client.target] = client
        return pool

    @classmethod
    def open(cls, registry_url: str | None, addresses: str | Collection[str], connect: Callable[[str], C],
             **options) -> WorkerPool:
        """From settings: a registry URL (none: the `addresses`, comma-separated or a list, in this process)."""
        if isinstance(addresses, str):
            addresses = [a.strip() for a in addresses.split(",") if a.strip()]
        return cls(open_registry(registry_url, list(addresses)), connect, **options)

    def client(self, address: str) -> C:
        with self._lock:
            if address not in self.clients:
                self.clients[address] = self._connect(address)
            return self.clients[address]

    def route(self, session_id: str | None = None, *, hint: str | None = None, affinity: str | None = None,
              exclude: Collection[str] = ()) -> str:
        """The address for a session (`hint`: where the caller last saw it), or for a new one with None. Without a
        session, requests of one `affinity` (a conversation resent whole, batch lines over one document: whatever
        makes their prompts share a prefix) go to one worker, whose prefix cache holds what they share, while its
        load allows."""
        live = {w.address: w for w in self._live(exclude)}
        if not live:
            raise NoWorker("no live model worker" + (f" besides {', '.join(exclude)}" if exclude else ""))
        best = self._least_loaded(list(live.values()))
        if session_id is None and affinity is not None:
            # Rendezvous hashing: the same worker for the same key, and only that key's share moves when workers
            # come and go.
            chosen = max(live.values(), key=lambda w: hashlib.sha256(f"{affinity}\0{w.address}".encode()).digest())
            return chosen.address if not (chosen.load >= self.overloaded_at and best.load < chosen.load) \
                else best.address
        if session_id is not None:
            holder = self.registry.holder(session_id) or hint
            if holder in live and not (live[holder].load >= self.overloaded_at and best.load < live[holder].load):
                return holder
            self.registry.claim(session_id, best.address, self.session_ttl_s)
        return best.address

    def connect(self, session_id: str | None = None, *, hint: str | None = None, affinity: str | None = None,
                exclude: Collection[str] = ()) -> tuple[str, C]:
        address = self.route(session_id, hint=hint, affinity=affinity, exclude=exclude)
        return address, self.client(address)

    def placed(self, session_id: str, address: str) -> None:
        """A session now lives on `address` (created or moved there)."""
        self.registry.claim(session_id, address, self.session_ttl_s)

    def lost(self, address: str) -> None:
        """A call to `address` failed UNAVAILABLE: skip it here for a while, whatever the registry says."""
        with self._lock:
            self._down[address] = time.monotonic() + self.cooldown_s

    def close(self) -> None:
        """Close the registry and the blocking clients (an async pool's owner awaits its clients' close)."""
        for client in self.clients.values():
            if not inspect.iscoroutinefunction(client.close):
                client.close()
        self.registry.close()

    def _live(self, exclude: Collection[str]) -> list[WorkerRecord]:
        now = time.monotonic()
        with self._lock:
            down = {a for a, until in self._down.items() if until > now}
        return [w for w in self.registry.workers() if w.address not in down and w.address not in exclude]

    def _least_loaded(self, workers: list[WorkerRecord]) -> WorkerRecord:
        lowest = min(w.load for w in workers)
        tied = sorted((w for w in workers if w.load == lowest), key=lambda w: w.address)
        return tied[next(self._turn) % len(tied)]
