"""Where clients find model workers and which worker holds a session hot.

Two implementations of one small interface: `RedisRegistry` (deployment: every worker heartbeats its record and the
sessions it holds hot; a worker that stops heartbeating drops out when its record expires) and `LocalRegistry`
(embedded: the configured addresses, always listed, and the sessions this process has seen where). Session IDs are a
routing hint here, not an identity: a wrong or stale holder costs a resume from the warm or cold tier, never a wrong
answer, because the worker loads a session by its own (tenant, session) key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from typing import Protocol

from foundation.registry.records import WorkerRecord


class Registry(Protocol):
    def announce(self, record: WorkerRecord, hot_session_ids: Iterable[str], ttl_s: float) -> None:
        """A worker's heartbeat: its record and its hot sessions, valid for `ttl_s`."""

    def withdraw(self, address: str) -> None:
        """A worker leaving (drained): clients stop routing to it at once."""

    def workers(self) -> list[WorkerRecord]:
        """The live workers."""

    def holder(self, session_id: str) -> str | None:
        """The address of the worker that last held the session, if any is known."""

    def claim(self, session_id: str, address: str, ttl_s: float) -> None:
        """Record where a session went (clients, after routing it)."""

    def close(self) -> None: ...


class LocalRegistry:
    """The embedded registry: workers from configuration, plus any announced in this process."""

    def __init__(self, addresses: Sequence[str] = ()) -> None:
        self._static = {a: WorkerRecord(a) for a in addresses}
        self._announced: dict[str, tuple[WorkerRecord, float]] = {}
        self._holders: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def announce(self, record: WorkerRecord, hot_session_ids: Iterable[str], ttl_s: float) -> None:
        expires = time.time() + ttl_s
        with self._lock:
            self._announced[record.address] = (record, expires)
            for session_id in hot_session_ids:
                self._holders[session_id] = (record.address, expires)

    def withdraw(self, address: str) -> None:
        with self._lock:
            self._announced.pop(address, None)
            self._static.pop(address, None)

    def workers(self) -> list[WorkerRecord]:
        now = time.time()
        with self._lock:
            live = {a: r for a, (r, expires) in self._announced.items() if expires > now}
            return [*live.values(), *(r for a, r in self._static.items() if a not in live)]

    def holder(self, session_id: str) -> str | None:
        with self._lock:
            address, expires = self._holders.get(session_id, (None, 0.0))
        return address if expires > time.time() else None

    def claim(self, session_id: str, address: str, ttl_s: float) -> None:
        with self._lock:
            self._holders[session_id] = (address, time.time() + ttl_s)

    def close(self) -> None:
        pass


class RedisRegistry:
    """Keys under `prefix`: `workers` (a sorted set of addresses by expiry), `worker:ADDRESS` (its record, expiring),
    `session:ID` (its holder's address, expiring). Listing is one ZRANGEBYSCORE and one MGET, whatever the number of
    sessions."""

    def __init__(self, url: str, prefix: str = "dsv4:registry") -> None:
        import redis

        self.redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.prefix = prefix

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def announce(self, record: WorkerRecord, hot_session_ids: Iterable[str], ttl_s: float) -> None:
        now, ttl_ms = time.time(), max(int(ttl_s * 1000), 1)
        record = WorkerRecord(**{**record.__dict__, "seen": now})
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self._key("worker", record.address), record.to_json(), px=ttl_ms)
            pipe.zadd(self._key("workers"), {record.address: now + ttl_s})
            pipe.zremrangebyscore(self._key("workers"), "-inf", now)
            for session_id in hot_session_ids:
                pipe.set(self._key("session", session_id), record.address, px=ttl_ms)
            pipe.execute()

    def withdraw(self, address: str) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(self._key("worker", address))
            pipe.zrem(self._key("workers"), address)
            pipe.execute()

    def workers(self) -> list[WorkerRecord]:
        addresses = [a.decode() for a in self.redis.zrangebyscore(self._key("workers"), time.time(), "+inf")]
        if not addresses:
            return []
        values = self.redis.mget([self._key("worker", a) for a in addresses])
        return [WorkerRecord.from_json(v) for v in values if v is not None]

    def holder(self, session_id: str) -> str | None:
        value = self.redis.get(self._key("session", session_id))
        return value.decode() if value is not None else None

    def claim(self, session_id: str, address: str, ttl_s: float) -> None:
        self.redis.set(self._key("session", session_id), address, px=max(int(ttl_s * 1000), 1))

    def close(self) -> None:
        self.redis.close()


def open_registry(url: str | None, addresses: Sequence[str] = ()) -> Registry:
    """`redis://...` (or `rediss://`, `unix://`): the shared registry; nothing or `local`: the configured
    `addresses` in this process."""
    if not url or url == "local":
        if not addresses:
            raise ValueError("a local worker registry needs the workers' addresses")
        return LocalRegistry(addresses)
    if url.split("://", 1)[0] in ("redis", "rediss", "unix"):
        return RedisRegistry(url)
    raise ValueError(f"worker registry {url!r}: expected redis://HOST:PORT/DB or local")
