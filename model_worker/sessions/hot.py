"""The hot tier: open sessions kept in this process (device memory with a GPU, else host) under a byte budget.

A session is pinned while a request uses it. When the budget is exceeded, unpinned sessions are demoted least
recently used first: dropped from memory, never lost, because every unpinned hot session is at its last commit,
which the warm/cold tiers hold. Pinned sessions are never demoted and a request never waits for memory: with
everything pinned the tier runs over budget until pins are released (the worker's admission control bounds how many
sessions run at once), so pins cannot deadlock.

The tier also says when each session was last used here, for the store's upkeep (upkeep.py): a session used here is
kept from expiring, and a hot copy unused for long is dropped, so that it never outlives the stored session (which
another worker may expire meanwhile) and brings it back.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from model_worker.sessions.session import OpenSession
from model_worker.sessions.store import SessionStore


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
        self._used_at: dict[tuple[str, str], float] = {}  # the last acquire or release (time.time())
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
            self._used_at[key] = time.time()
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
                self._used_at[key] = time.time()
                self._pins[key] -= 1
                if not self._pins[key]:
                    del self._pins[key]
                self._demote()

    def add(self, session: OpenSession) -> None:
        """Keep a session created in this process (at its last commit) hot."""
        with self._lock:
            key = (session.tenant, session.session_id)
            self._sessions[key] = session
            self._used_at[key] = time.time()
            self._demote()

    def discard(self, tenant: str, session_id: str) -> None:
        with self._lock:
            self._sessions.pop((tenant, session_id), None)
            self._forget((tenant, session_id))

    def in_use(self) -> set[tuple[str, str]]:
        """(tenant, session) pinned by a request now."""
        with self._lock:
            return set(self._pins)

    def used_since(self, since: float) -> set[tuple[str, str]]:
        """(tenant, session) in use now or used at or after `since` (time.time()), hot or demoted since; what was
        used before `since` and is no longer hot is forgotten."""
        with self._lock:
            for key in [k for k, at in self._used_at.items() if at < since and k not in self._sessions]:
                self._forget(key)
            return set(self._pins) | {key for key, at in self._used_at.items() if at >= since}

    def drop_unused(self, since: float) -> int:
        """Drop the hot copies nobody has used since `since` (pinned ones stay); returns how many went."""
        with self._lock:
            idle = [key for key in self._sessions if key not in self._pins and self._used_at.get(key, 0) < since]
            for key in idle:
                del self._sessions[key]
                self._forget(key)
            return len(idle)

    def _forget(self, key: tuple[str, str]) -> None:
        if key not in self._pins:
            self._used_at.pop(key, None)

    def _demote(self) -> None:
        total = self.nbytes
        for key in list(self._sessions):
            if total <= self.budget_bytes:
                return
            if key in self._pins:
                continue
            total -= self._sessions.pop(key).state.nbytes()["total"]
            self.stats.demotions += 1
