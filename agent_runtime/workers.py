"""The model workers an agent runtime uses. A new agent session goes to the least loaded worker, and its address is
recorded on the session so its turns go where its compressed KV is hot. A session whose worker left the pool goes
to another, which resumes it from the shared warm or cold session tier."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from model_worker.client import WorkerClient
from model_worker.client.errors import WorkerError


class WorkerPool:
    def __init__(self, clients: dict[str, WorkerClient]) -> None:
        if not clients:
            raise ValueError("at least one model worker address")
        self.clients = clients

    @classmethod
    def connect(cls, addresses: Sequence[str], **options: Any) -> WorkerPool:
        return cls({address: WorkerClient(address, **options) for address in addresses})

    @classmethod
    def of(cls, client: WorkerClient) -> WorkerPool:
        return cls({client.target: client})

    def client(self, address: str | None) -> WorkerClient:
        if address in self.clients:
            return self.clients[address]
        return self.clients[self.pick()]

    def pick(self) -> str:
        """The address of the worker with the fewest requests waiting and running (reachable ones first)."""
        if len(self.clients) == 1:
            return next(iter(self.clients))
        loads = {}
        for address, client in self.clients.items():
            try:
                load = client.load(timeout=2)
                loads[address] = load.waiting_requests + load.running_requests
            except WorkerError:
                continue
        if not loads:
            return next(iter(self.clients))
        return min(loads, key=loads.__getitem__)

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
