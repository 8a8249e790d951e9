"""Tiers with real Redis and real files: warm in front of cold (fill, fall back past a damaged or evicted copy; a full
or unreachable warm tier never fails a read nor serves an old value), the hot tier's pins and demotions, and expiry
held off by leases."""

from __future__ import annotations

import errno
import os
import time

import pytest
import torch
from sessions_testlib import TOKENS, feed, grow

from foundation.blobs.stores import TieredBlobs, open_tiered
from model_worker.sessions import SessionStore, admin, open_blobs
from model_worker.sessions.hot import HotSessions
from model_worker.sessions.manifest import blob_key, tenant_key


def test_warm_in_front_of_cold(model, redis_url, tmp_path) -> None:
    worker_a = SessionStore(open_tiered(str(tmp_path / "cold"), redis_url), model.fingerprint, model.layout)
    session = worker_a.create("acme")
    grow(model, worker_a, session, TOKENS[:700])
    expected = feed(model, session, [8], chunk=1)
    warm, cold = worker_a.blobs.warm, worker_a.blobs.cold
    assert set(warm.list("t/")) >= set(cold.list("t/"))  # written through to both
    # another worker reaches the same tiers and resumes
    worker_b = SessionStore(open_tiered(str(tmp_path / "cold"), redis_url), model.fingerprint, model.layout)
    assert torch.equal(feed(model, worker_b.open("acme", session.session_id), [8], chunk=1), expected)
    # warm forgets everything (eviction, restart): cold serves, and warm is filled again
    for key in list(warm.list("")):
        warm.delete(key)
    assert torch.equal(feed(model, worker_b.open("acme", session.session_id), [8], chunk=1), expected)
    assert set(warm.list("t/")) >= {k for k in cold.list("t/") if "/b/" in k and k.endswith(session_tail(worker_b))}
    # a damaged warm copy is passed over for the cold one
    tail = blob_key(tenant_key("acme"), session_tail(worker_b))
    warm.put(tail, warm.get(tail)[:-4])
    reopened = worker_b.open("acme", session.session_id)
    assert not reopened.rebuilt and torch.equal(feed(model, reopened, [8], chunk=1), expected)


def session_tail(store: SessionStore) -> str:
    tk = tenant_key("acme")
    session_id = admin.list_sessions(store, "acme")[0]
    return store.read_commit(tk, session_id, None).tail


def test_tiered_reads_survive_a_missing_warm_store(model, tmp_path) -> None:
    cold = open_blobs(str(tmp_path / "cold"))
    warm = open_blobs("memory://warm-" + str(os.getpid()))
    store = SessionStore(TieredBlobs(warm, cold), model.fingerprint, model.layout)
    session = store.create("acme")
    grow(model, store, session, TOKENS[:300])
    cold_only = SessionStore(cold, model.fingerprint, model.layout)
    assert cold_only.open("acme", session.session_id).token_ids == TOKENS[:300]


class _FullWarm:
    """A warm store at its memory limit under `noeviction`: it refuses writes (as RedisBlobs reports Redis's OOM)
    and still reads and deletes."""

    def __init__(self, url: str) -> None:
        self.store, self.full, self.url = open_blobs(url), False, url

    def put(self, key: str, data: bytes) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "Redis is at its memory limit")
        self.store.put(key, data)

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_a_full_warm_tier_fails_no_write_and_serves_no_old_value(tmp_path) -> None:
    warm = _FullWarm("memory://warm-full-" + str(os.getpid()))
    tiers = TieredBlobs(warm, open_blobs(str(tmp_path / "cold")))
    tiers.put("t/a/s/x/lease/job", b"until 1")
    warm.full = True
    tiers.put("t/a/s/x/lease/job", b"until 2")  # durable in cold; warm's older copy is removed, not left
    assert tiers.get("t/a/s/x/lease/job") == b"until 2" and warm.store.get("t/a/s/x/lease/job") is None
    assert tiers.put_if_absent("t/a/s/y/meta", b"claimed") and tiers.get("t/a/s/y/meta") == b"claimed"
    assert list(tiers.list("t/a/s/")) == ["t/a/s/x/lease/job", "t/a/s/y/meta"]  # cold answers listings


def test_an_unreachable_warm_tier_falls_through_to_cold(tmp_path) -> None:
    pytest.importorskip("redis")
    cold = open_blobs(str(tmp_path / "cold"))
    cold.put("t/a/b/v", b"value")
    tiers = open_tiered(str(tmp_path / "cold"), "redis://127.0.0.1:1/12", warm_ttl_seconds=60)  # nothing listens
    assert tiers.get("t/a/b/v") == b"value" and tiers.exists("t/a/b/v") and list(tiers.list("t/")) == ["t/a/b/v"]
    with pytest.raises(ConnectionError):  # warm may hold an older copy it cannot remove: the write is not done
        tiers.put("t/a/b/w", b"new")


def test_hot_tier_pins_hits_and_demotes(model, tmp_path) -> None:
    store = SessionStore(open_blobs(str(tmp_path)), model.fingerprint, model.layout)
    ids = []
    for _ in range(3):
        session = store.create("acme")
        grow(model, store, session, TOKENS[:300])
        ids.append(session.session_id)
    one_session = store.open("acme", ids[0]).state.nbytes()["total"]
    hot = HotSessions(store, budget_bytes=int(2.5 * one_session))
    with hot.acquire("acme", ids[0]) as first:
        with hot.acquire("acme", ids[1]), hot.acquire("acme", ids[2]):
            assert hot.nbytes > hot.budget_bytes  # everything pinned: over budget rather than stuck
        assert ("acme", ids[0]) in hot  # pinned: never demoted
        feed(model, first, [1], chunk=1)
        store.commit(first, [1])
    assert hot.stats.misses == 3 and hot.stats.demotions >= 1 and hot.nbytes <= hot.budget_bytes
    with hot.acquire("acme", ids[0]) as again:
        assert again is first and again.token_ids == TOKENS[:300] + [1]
    assert hot.stats.hits == 1
    with pytest.raises(RuntimeError), hot.acquire("acme", ids[0]) as broken:
        feed(model, broken, [2], chunk=1)  # past its last commit, then the request fails
        raise RuntimeError("request failed")
    assert ("acme", ids[0]) not in hot  # the uncommitted copy is gone; the store has the commit
    with hot.acquire("acme", ids[0]) as reopened:
        assert reopened.state.num_tokens == 301


def test_expiry_spares_held_and_recent_sessions(model, tmp_path) -> None:
    store = SessionStore(open_blobs(str(tmp_path)), model.fingerprint, model.layout)
    held, idle = store.create("acme"), store.create("acme")
    for session in (held, idle):
        grow(model, store, session, TOKENS[:40])
    assert admin.expire(store, "acme", ttl_seconds=3600) == []  # both used just now
    admin.hold(store, "acme", held.session_id, "job-7", seconds=7200)
    later = time.time() + 5000
    assert admin.expire(store, "acme", ttl_seconds=3600, now=later) == [idle.session_id]
    admin.release(store, "acme", held.session_id, "job-7")
    assert admin.expire(store, "acme", ttl_seconds=3600, now=later) == [held.session_id]
    assert admin.list_sessions(store, "acme") == []
