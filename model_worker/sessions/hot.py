"""The hot tier: open sessions kept in this process (device memory with a GPU, else host) under a byte budget.

A session is pinned while a request uses it. When the budget is exceeded, unpinned sessions are demoted least
recently used first: dropped from memory, never lost, because every unpinned hot session is at its last commit,
which the warm/cold tiers hold. Pinned sessions are never demoted and a request never waits for memory: with
everything pinned the tier runs over budget until pins are released (the worker's admission control bounds how many
sessions run at once), so pins cannot deadlock.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from model_worker.sessions.store import OpenSession, SessionStore


@dataclass
class HotStats:
    hits: int = 0
    misses: int = 0
    demotions: int = 0
    rebuilds: int = 0


class HotSessions:
    def __init__(self, store: SessionStore, budget_bytes: int) -> None:
        self.store, self.budget_bytes = store, budget_bytes
        self.stats = HotStats()
        self._sessions: OrderedDict[tuple[str, str], OpenSession] = OrderedDict()
        self._pins: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return sum(s.state.nbytes()["total"] for s in self._sessions.values())

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._sessions

    def session_ids(self) -> list[str]:
        """The sessions held now (what the worker registry routes to this worker)."""
        with self._lock:
            return [session_id for _, session_id in self._sessions]

    @contextlib.contextmanager
    def acquire(self, tenant: str, session_id: str) -> Iterator[OpenSession]:
        """The session, hot or opened from the store, pinned for the duration. The caller commits before leaving;
        if it leaves by an exception the hot copy (possibly past its last commit) is dropped, and the next acquire
        opens the stored commit."""
        key = (tenant, session_id)
        with self._lock:
            session = self._sessions.get(key)
            if session is not None:
                self._sessions.move_to_end(key)
                self.stats.hits += 1
            self._pins[key] = self._pins.get(key, 0) + 1
        try:
            if session is None:
                session = self.store.open(tenant, session_id)
                with self._lock:
                    self.stats.misses += 1
                    self.stats.rebuilds += session.rebuilt
                    session = self._sessions.setdefault(key, session)
            yield session
        except BaseException:
            with self._lock:
                self._sessions.pop(key, None)
            raise
        finally:
            with self._lock:
                self._pins[key] -= 1
                if not self._pins[key]:
                    del self._pins[key]
                self._demote()

    def add(self, session: OpenSession) -> None:
        """Keep a session created in this process (at its last commit) hot."""
        with self._lock:
            self._sessions[(session.tenant, session.session_id)] = session
            self._demote()

    def discard(self, tenant: str, session_id: str) -> None:
        with self._lock:
            self._sessions.pop((tenant, session_id), None)

    def _demote(self) -> None:
        total = self.nbytes
        for key in list(self._sessions):
            if total <= self.budget_bytes:
                return
            if key in self._pins:
                continue
            total -= self._sessions.pop(key).state.nbytes()["total"]
            self.stats.demotions += 1
