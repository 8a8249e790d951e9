"""The store's scheduled upkeep: a pass expires idle sessions (sparing leases and sessions a request uses), collects
unreferenced values, touches what this worker used, drops stale hot copies, recounts quotas, and runs in one worker
per period; and `serve` runs it on its own, with the per-tenant byte quota enforced through gRPC."""

from __future__ import annotations

import json
import sys
import time
import uuid

import pytest
from realparts import Process, child_env, require_redis, wait_for
from sessions_testlib import TOKENS, grow

from foundation.blobs.keys import glob_escape
from foundation.blobs.redis_store import RedisBlobs
from foundation.clients.worker import Message, ResourceExhausted, WorkerClient
from model_worker.sessions import SessionStore, admin, open_blobs
from model_worker.sessions.hot import HotSessions
from model_worker.sessions.manifest import session_prefix, tenant_key
from model_worker.sessions.upkeep import CLAIMS, StoreUpkeep, UpkeepPolicy

HOUR = 3600.0
POLICY = UpkeepPolicy(every_seconds=60, ttl_seconds=HOUR, grace_seconds=0)


def _sessions(model, store: SessionStore, count: int, tenant: str = "acme") -> list[str]:
    ids = []
    for _ in range(count):
        session = store.create(tenant)
        grow(model, store, session, TOKENS[:40])
        ids.append(session.session_id)
    return ids


def test_a_pass_expires_idle_sessions_but_not_held_or_used_ones_and_collects(model, tmp_path) -> None:
    store = SessionStore(open_blobs(str(tmp_path)), model.fingerprint, model.layout)
    idle, leased, running = _sessions(model, store, 3)
    admin.hold(store, "acme", leased, "job-7", seconds=3 * HOUR)
    hot = HotSessions(store, budget_bytes=1 << 30)
    upkeep = StoreUpkeep(store, POLICY, hot)
    assert upkeep.run_pass().expired == {}  # everything was used just now
    later = time.time() + 2 * HOUR
    with hot.acquire("acme", running):  # a request runs on it (and has not committed yet)
        report = StoreUpkeep(store, POLICY, hot).run_pass(now=later)
    assert report.claimed and report.expired == {tenant_key("acme"): [idle]}
    assert admin.list_sessions(store, "acme") == sorted([leased, running])
    assert report.collected == 0  # the expired session shares every value with the others (same tokens)
    admin.release(store, "acme", leased, "job-7")
    final = StoreUpkeep(store, POLICY).run_pass(now=later + HOUR)
    assert sorted(final.expired[tenant_key("acme")]) == sorted([leased, running])
    assert final.collected > 0 and list(store.blobs.list(f"t/{tenant_key('acme')}/b/")) == []


def test_one_worker_per_period_expires_and_collects(model, tmp_path) -> None:
    store = SessionStore(open_blobs(str(tmp_path)), model.fingerprint, model.layout)
    [idle] = _sessions(model, store, 1)
    workers = [StoreUpkeep(SessionStore(open_blobs(str(tmp_path)), model.fingerprint, model.layout), POLICY)
               for _ in range(3)]
    later = time.time() + 2 * HOUR
    reports = [worker.run_pass(now=later) for worker in workers]
    assert [r.claimed for r in reports] == [True, False, False]
    assert reports[0].expired == {tenant_key("acme"): [idle]} and not reports[1].expired
    next_period = [worker.run_pass(now=later + POLICY.every_seconds) for worker in reversed(workers)]
    assert [r.claimed for r in next_period] == [True, False, False]
    assert len(list(store.blobs.list(CLAIMS))) == 1  # the winner removes older claims


def test_a_tenant_whose_collection_fails_keeps_its_values_and_holds_up_no_other(model, tmp_path) -> None:
    store = SessionStore(open_blobs(str(tmp_path)), model.fingerprint, model.layout)
    old_weights = SessionStore(store.blobs, model.fingerprint + "-before-the-upgrade", model.layout)
    [legacy] = _sessions(model, old_weights, 1, tenant="legacy")
    admin.hold(old_weights, "legacy", legacy, "job-1", seconds=3 * HOUR)
    [idle] = _sessions(model, store, 1)
    legacy_values = sorted(store.blobs.list(f"t/{tenant_key('legacy')}/b/"))
    report = StoreUpkeep(store, POLICY).run_pass(now=time.time() + 2 * HOUR)
    assert list(report.failed) == [tenant_key("legacy")] and "other weights" in report.failed[tenant_key("legacy")]
    assert sorted(store.blobs.list(f"t/{tenant_key('legacy')}/b/")) == legacy_values  # nothing of it collected
    assert report.expired == {tenant_key("acme"): [idle]} and report.collected > 0


def test_a_pass_touches_what_this_worker_used_and_drops_stale_hot_copies(model, tmp_path) -> None:
    store = SessionStore(open_blobs(str(tmp_path)), model.fingerprint, model.layout)
    used, untouched = _sessions(model, store, 2)
    hot = HotSessions(store, budget_bytes=1 << 30)
    upkeep = StoreUpkeep(store, POLICY, hot)
    with hot.acquire("acme", used):
        pass
    touch = session_prefix(tenant_key("acme"), used) + "touch"
    before = store.blobs.written_at(touch)
    report = upkeep.run_pass()
    assert report.touched == 1 and store.blobs.written_at(touch) >= before
    assert upkeep.run_pass().touched == 0  # nothing used since
    assert ("acme", used) in hot and ("acme", untouched) not in hot
    assert upkeep.run_pass(now=time.time() + POLICY.ttl_seconds / 2 + 1).dropped == 1
    assert ("acme", used) not in hot  # unused for half the TTL: reopened from the store next time


def test_a_pass_recounts_quotas_with_other_workers_writes(model, tmp_path) -> None:
    mine = SessionStore(open_blobs(str(tmp_path)), model.fingerprint, model.layout, tenant_quota_bytes=1 << 30)
    other = SessionStore(open_blobs(str(tmp_path)), model.fingerprint, model.layout)
    left = mine.quota_left("acme")
    _sessions(model, other, 1)
    assert mine.quota_left("acme") == left  # counted once, then only this store's own writes
    StoreUpkeep(mine, POLICY).run_pass()
    assert mine.quota_left("acme") < left


def test_the_ttl_spans_several_periods() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        UpkeepPolicy(every_seconds=60, ttl_seconds=120)
    with pytest.raises(ValueError):
        UpkeepPolicy(every_seconds=0)


def test_serve_expires_idle_sessions_on_its_own_and_enforces_the_quota(tmp_path) -> None:
    warm = f"redis://127.0.0.1:6379/12?prefix=test-upkeep-{uuid.uuid4().hex}:"
    warm_client = require_redis(warm.split("?")[0])
    (tmp_path / "keys.json").write_text(json.dumps({"key-e": "expiry", "key-q": "quota"}))
    worker = Process([sys.executable, "-m", "model_worker", "serve", "--config", "tiny", "--port", "0",
                      "--session-store", str(tmp_path / "sessions"), "--warm-store", warm,
                      "--api-keys", str(tmp_path / "keys.json"),
                      "--session-ttl-hours", "0.0005", "--collect-every-seconds", "0.4",  # a 1.8 s TTL
                      "--tenant-quota-gb", str(400_000 / (1 << 30))], child_env(), tmp_path / "worker.log")
    try:
        port = worker.wait_for(r"serving \S+ on 127\.0\.0\.1:(\d+)").group(1)
        address = f"127.0.0.1:{port}"
        with WorkerClient(address, api_key="key-e") as expiry, WorkerClient(address, api_key="key-q") as quota:
            held = expiry.create_session(system_prompt="held").session_id
            expiry.hold_session(held, "job-1", 3600)
            idle = expiry.create_session(system_prompt="idle").session_id
            # A commit past the tenant's quota (~0.5 MB for 400 tokens of tiny) is refused; the session stays.
            session = quota.create_session(system_prompt="capped")
            with pytest.raises(ResourceExhausted):
                quota.append(session.session_id, messages=[Message("user", "hello world " * 200)])
            assert quota.get_session(session.session_id).commit == session.commit
            # The idle session goes within a few passes; the held one, idle longer, was judged in the same passes.
            wait_for(lambda: idle not in expiry.list_sessions(), timeout=60, what="the idle session expired")
            assert held in expiry.list_sessions()
        log = worker.log.read_text()
        assert "pass failed" not in log
        for warning in RedisBlobs(warm).memory_warnings():  # what this Redis lacks as a cache, said at start-up
            assert warning in log
    finally:
        worker.stop()
        leftover = list(warm_client.scan_iter(match=glob_escape(warm.split("prefix=")[1]) + "*", count=1000))
        if leftover:
            warm_client.delete(*leftover)
