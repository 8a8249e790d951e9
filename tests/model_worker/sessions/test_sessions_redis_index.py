"""RedisBlobs' folder indexes on a real Redis (db 12), counted command by command: listing a session, committing and
pruning never SCAN the database and cost the same however much else it holds; deletes leave no empty folder behind;
a store written before the indexes is indexed once; the warm tier's TTL is set, refreshed on reads, and values it
forgot drop out of listings; and the server's memory settings are checked."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from sessions_testlib import TOKENS, grow, small_model

from foundation.blobs.keys import glob_escape
from foundation.blobs.redis_store import RedisBlobs
from foundation.blobs.stores import open_tiered
from model_worker.sessions import SessionStore
from model_worker.sessions.manifest import tenant_key

URL = "redis://127.0.0.1:6379/12"


class Commands:
    """Counts the commands a store's client sends (direct, scripted and pipelined) by name."""

    def __init__(self, store: RedisBlobs) -> None:
        self.counts: Counter[str] = Counter()
        client, direct, pipeline = store.client, store.client.execute_command, store.client.pipeline

        def counted(*args, **options):
            self.counts[str(args[0]).upper()] += 1
            return direct(*args, **options)

        def counted_pipeline(*args, **options):
            pipe = pipeline(*args, **options)
            execute = pipe.execute

            def counted_execute(*a, **k):
                for command, _ in pipe.command_stack:
                    self.counts[str(command[0]).upper()] += 1
                return execute(*a, **k)

            pipe.execute = counted_execute
            return pipe

        client.execute_command, client.pipeline = counted, counted_pipeline

    def total(self) -> int:
        return sum(self.counts.values())


@pytest.fixture
def store():
    redis = pytest.importorskip("redis")
    blobs = RedisBlobs(f"{URL}?prefix=test-index-{uuid.uuid4().hex}:")
    try:
        blobs.client.ping()
    except redis.exceptions.RedisError as exc:
        pytest.skip(f"no Redis at {URL}: {exc}")
    yield blobs
    leftover = list(blobs.client.scan_iter(match=glob_escape(blobs.prefix) + "*", count=1000))
    if leftover:
        blobs.client.delete(*leftover)


def _session_keys(tenant: str, session: str, commits: int) -> list[str]:
    return [f"t/{tenant}/s/{session}/meta"] + [f"t/{tenant}/s/{session}/c/{seq:012d}" for seq in range(commits)]


def test_listing_a_session_costs_the_same_however_much_else_the_database_holds(store) -> None:
    for key in _session_keys("a", "one", 8):
        store.put(key, b"v")
    assert sorted(store.list("t/a/s/one/")) == sorted(_session_keys("a", "one", 8))  # indexed: marker read once
    commands = Commands(store)
    list(store.list("t/a/s/one/c/"))
    alone = commands.total()
    pipe = store.client.pipeline(transaction=False)
    for i in range(3000):  # other sessions and other tenants' values, and keys of other programs
        pipe.set(f"{store.prefix}t/b/b/{i:064x}", b"v").set(f"celery-{store.prefix}{i}", b"x")
    pipe.execute()
    for key in _session_keys("a", "two", 20):
        store.put(key, b"v")
    commands.counts.clear()
    assert len(list(store.list("t/a/s/one/c/"))) == 8
    assert commands.counts["SCAN"] == 0 and commands.total() == alone == 1  # one ZSCAN of the folder's index
    store.client.delete(*[f"celery-{store.prefix}{i}" for i in range(3000)])


def test_commits_and_prunes_on_redis_never_scan(store) -> None:
    model = small_model()
    sessions = SessionStore(store, model.fingerprint, model.layout, retain_commits=2)
    session = sessions.create("acme")
    list(store.list(""))  # the store's one-time indexing (a SCAN) is done
    commands = Commands(store)
    grow(model, sessions, session, TOKENS[:200], chunk=40)  # five commits, each pruning past two
    assert commands.counts["SCAN"] == 0 and commands.counts["ZSCAN"] > 0
    assert sessions.commit_seqs(tenant_key("acme"), session.session_id) == [3, 4]


def test_deletes_leave_no_empty_folder(store) -> None:
    keys = ["t/a/s/x/meta", "t/a/s/x/c/000000000000", "t/a/b/v"]
    for key in keys:
        store.put(key, b"v")
    assert sorted(store.folders("t/a/")) == ["b", "s"]
    for key in keys[:2]:
        store.delete(key)
    assert list(store.folders("t/a/")) == ["b"] and list(store.folders("t/a/s/")) == []
    store.delete(keys[2])
    assert list(store.list("")) == [] and list(store.folders("")) == []
    assert list(store.client.scan_iter(match=glob_escape(store.prefix) + "*")) == []  # nor a layout marker


def test_a_store_written_before_the_indexes_is_indexed_once(store) -> None:
    old_times = store.prefix + "\0written"
    for i, key in enumerate(["t/a/s/x/meta", "t/a/b/v", "top"]):
        store.client.set(store.prefix + key, b"v")
        store.client.zadd(old_times, {key: 1000.0 + i})
    commands = Commands(store)
    assert sorted(store.list("t/")) == ["t/a/b/v", "t/a/s/x/meta"]
    assert commands.counts["SCAN"] >= 1 and store.written_at("t/a/b/v") == 1001.0
    assert not store.client.exists(old_times)
    again = RedisBlobs(store.url)
    commands = Commands(again)
    assert sorted(again.list("")) == ["t/a/b/v", "t/a/s/x/meta", "top"] and commands.counts["SCAN"] == 0


def test_warm_values_carry_a_ttl_refreshed_on_reads(store) -> None:
    warm = RedisBlobs(store.url, ttl_seconds=3600)
    warm.put("t/a/b/v", b"v")
    warm.put("t/a/b/w", b"w")
    stored, index = warm.prefix + "t/a/b/v", warm.prefix + "\0d:t/a/b/"
    assert 0 < warm.client.pttl(stored) <= 3_600_000 and 0 < warm.client.pttl(index) <= 3_600_000
    warm.client.pexpire(stored, 1000)
    assert warm.get("t/a/b/v") == b"v" and warm.client.pttl(stored) > 3_000_000  # read: kept another TTL
    warm.client.delete(warm.prefix + "t/a/b/w")  # as eviction or the TTL would
    assert list(warm.list("t/a/")) == ["t/a/b/v"] and warm.written_at("t/a/b/w") is None
    assert warm.client.zscore(index, "w") is None  # its index entry went with the listing
    durable = RedisBlobs(store.url)
    durable.put("t/d/v", b"v")
    assert durable.client.pttl(durable.prefix + "t/d/v") == -1  # no TTL: Redis as the only store


class _Config:
    def __init__(self, config=None, refuse: Exception | None = None) -> None:
        self.config, self.refuse = config, refuse

    def config_get(self, pattern):
        if self.refuse:
            raise self.refuse
        return self.config


@pytest.mark.parametrize(("config", "ttl", "warning"), [
    ({"maxmemory": "0", "maxmemory-policy": "noeviction"}, 3600, "no memory limit"),
    ({"maxmemory": "0", "maxmemory-policy": "allkeys-lru"}, 3600, "no memory limit"),
    ({"maxmemory": "1000000", "maxmemory-policy": "noeviction"}, 3600, "no longer cached"),
    ({"maxmemory": "1000000", "maxmemory-policy": "volatile-lru"}, None, "evicts only values with a TTL"),
    ({"maxmemory": "1000000", "maxmemory-policy": "volatile-lru"}, 3600, None),
    ({"maxmemory": "1000000", "maxmemory-policy": "allkeys-lru"}, None, None),
])
def test_memory_settings_are_checked(config, ttl, warning) -> None:
    warm = RedisBlobs(URL, ttl_seconds=ttl)
    warm.client = _Config(config)
    warnings = warm.memory_warnings()
    assert (warning is None and warnings == []) or (len(warnings) == 1 and warning in warnings[0])


def test_a_refused_config_command_is_reported_not_raised(store) -> None:
    import redis

    refused = RedisBlobs(URL)
    refused.client = _Config(refuse=redis.exceptions.ResponseError("unknown command 'CONFIG'"))
    [warning] = refused.memory_warnings()
    assert "cannot read the memory settings" in warning
    assert isinstance(RedisBlobs(URL).memory_warnings(), list)  # the real server answers, whatever its settings


def test_a_password_in_the_url_is_never_shown(tmp_path) -> None:
    """A store's URL names it in messages and in a session's bytes by tier, which GetSession sends to clients."""
    store = RedisBlobs("redis://:s3cret@127.0.0.1:6379/12?prefix=p:")
    assert "s3cret" not in store.url and store.url == "redis://***@127.0.0.1:6379/12?prefix=p:"
    assert "s3cret" not in open_tiered(str(tmp_path), "redis://:s3cret@127.0.0.1:6379/12").url
