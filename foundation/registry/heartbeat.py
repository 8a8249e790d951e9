"""A model worker's heartbeat: every few seconds its record (address, model, load) and the sessions it holds hot go to
the registry, valid for three beats, so a worker that dies drops out within three beats and its sessions go
elsewhere. Leaving cleanly withdraws the record at once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from foundation.registry.records import WorkerRecord
from foundation.registry.registry import Registry

log = logging.getLogger(__name__)
BEATS_TO_LIVE = 3


class Heartbeat:
    def __init__(self, registry: Registry, snapshot: Callable[[], tuple[WorkerRecord, list[str]]],
                 every_s: float = 2.0) -> None:
        self.registry, self.snapshot, self.every_s = registry, snapshot, every_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-heartbeat", daemon=True)
        self.address: str | None = None

    def start(self) -> Heartbeat:
        self.beat()  # listed before the first request can be routed here
        self._thread.start()
        return self

    def beat(self) -> None:
        record, hot = self.snapshot()
        self.address = record.address
        self.registry.announce(record, hot, self.every_s * BEATS_TO_LIVE)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.every_s + 5)
        if self.address is not None:
            try:
                self.registry.withdraw(self.address)
            except Exception:  # noqa: BLE001 - leaving anyway; the record expires on its own
                log.warning("could not withdraw %s from the registry", self.address, exc_info=True)
        self.registry.close()

    def _run(self) -> None:
        while not self._stopping.wait(self.every_s):
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - a registry outage must not stop the worker; the next beat retries
                log.warning("registry heartbeat failed", exc_info=True)
