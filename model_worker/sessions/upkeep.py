"""The session store kept bounded without an operator: every model worker runs a pass every `every_seconds` (serve
starts it), one of them per period expires and collects.

Each worker, each pass:
- touches the sessions used in this process since its last pass (a session in use is never idle, even when a long
  request has not committed yet), and drops hot copies unused for half the TTL: a hot copy never outlives a stored
  session another worker expires (it would otherwise bring the session back at its next request);
- forgets its count of each tenant's stored bytes, so the quota is recounted with what other workers wrote and
  collected.
Then the worker that claims the period (`upkeep/{period number}` written only if absent: one winner among all the
workers sharing the store) expires every tenant's sessions idle for the TTL that no lease holds and none of its own
requests uses, and collects the values no retained commit names (sparing recent writes, which a commit in progress
may be about to name); a tenant whose pass fails (sessions stored for other weights, whose values collection cannot
name) keeps its values and does not hold up the others. Two passes overlapping (a pass longer than the period,
clocks apart) is wasted work, not harm: expiry and collection are idempotent.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from model_worker.sessions import admin
from model_worker.sessions.errors import SessionError
from model_worker.sessions.hot import HotSessions
from model_worker.sessions.manifest import meta_key, session_prefix, tenant_key
from model_worker.sessions.store import SessionStore

log = logging.getLogger(__name__)

CLAIMS = "upkeep/"
_PERIODS_PER_TTL = 4  # a used session is touched within a period; its hot copy goes after half the TTL


@dataclass(frozen=True)
class UpkeepPolicy:
    every_seconds: float
    ttl_seconds: float | None = None  # None: sessions never expire (values no commit names are still collected)
    grace_seconds: float = 600.0

    def __post_init__(self) -> None:
        if self.every_seconds <= 0:
            raise ValueError("the upkeep period must be positive")
        if self.ttl_seconds is not None and self.ttl_seconds < _PERIODS_PER_TTL * self.every_seconds:
            raise ValueError(f"the session TTL ({self.ttl_seconds:g} s) must be at least {_PERIODS_PER_TTL} upkeep "
                             f"periods ({self.every_seconds:g} s each): a session in use is touched once a period")


@dataclass
class UpkeepReport:
    touched: int = 0
    dropped: int = 0
    claimed: bool = False
    expired: dict[str, list[str]] = field(default_factory=dict)  # tenant key -> session IDs
    collected: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # tenant key -> why its expiry or collection stopped


class StoreUpkeep:
    def __init__(self, store: SessionStore, policy: UpkeepPolicy, hot: HotSessions | None = None) -> None:
        self.store, self.policy, self.hot = store, policy, hot
        self.passes = 0
        self._since = time.time()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> StoreUpkeep:
        self._thread = threading.Thread(target=self._run, name="session-upkeep", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.wait(self.policy.every_seconds):
            try:
                report = self.run_pass()
            except Exception:  # noqa: BLE001 - a store that failed this pass (down, full) is tried again next one
                log.exception("session upkeep: the pass failed; the next is in %g s", self.policy.every_seconds)
                continue
            if report.expired or report.collected:
                log.info("session upkeep: expired %d sessions, collected %d values",
                         sum(map(len, report.expired.values())), report.collected)

    def run_pass(self, now: float | None = None) -> UpkeepReport:
        """One pass (`now`: the time expiry judges idleness by; default the clock)."""
        now, report = time.time() if now is None else now, UpkeepReport()
        in_use: set[tuple[str, str]] = set()
        if self.hot is not None and self.policy.ttl_seconds is not None:  # what keeps sessions from expiring
            since, self._since = self._since, time.time()
            report.touched = self._touch(self.hot.used_since(since))
            report.dropped = self.hot.drop_unused(now - self.policy.ttl_seconds / 2)
            in_use = self.hot.in_use()
        tenants = admin.tenant_keys(self.store)
        for tk in tenants:
            self.store.forget_usage(tk)
        report.claimed = self._claim(now)
        if report.claimed:
            spare: dict[str, set[str]] = {}
            for tenant, session_id in in_use:
                spare.setdefault(tenant_key(tenant), set()).add(session_id)
            for tk in tenants:
                try:
                    self._expire_and_collect(tk, now, spare.get(tk, set()), report)
                except SessionError as exc:  # e.g. sessions of other weights: collection cannot tell what they need
                    report.failed[tk] = str(exc)
                    log.warning("session upkeep: tenant %s: %s; its values stay until this is resolved", tk, exc)
        self.passes += 1
        return report

    def _expire_and_collect(self, tk: str, now: float, spare: set[str], report: UpkeepReport) -> None:
        if self.policy.ttl_seconds is not None:
            expired = admin.expire_tenant(self.store, tk, self.policy.ttl_seconds, now, spare)
            if expired:
                report.expired[tk] = expired
        report.collected += admin.collect_tenant(self.store, tk, self.policy.grace_seconds)

    def _touch(self, used: set[tuple[str, str]]) -> int:
        """Mark each session's last use as now, as opening it does (one that is gone stays gone)."""
        touched = 0
        for tenant, session_id in used:
            tk = tenant_key(tenant)
            if self.store.blobs.exists(meta_key(tk, session_id)):
                self.store.blobs.put(session_prefix(tk, session_id) + "touch", b"")
                touched += 1
        return touched

    def _claim(self, now: float) -> bool:
        """Whether this worker runs this period's expiry and collection (the first to claim it); the winner
        removes older claims."""
        mine = f"{CLAIMS}{int(now // self.policy.every_seconds):012d}"
        if not self.store.blobs.put_if_absent(mine, b""):
            return False
        for key in list(self.store.blobs.list(CLAIMS)):
            if key < mine:  # zero-padded: older periods sort first
                self.store.blobs.delete(key)
        return True
