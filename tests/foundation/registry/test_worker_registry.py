"""The worker registry (in-process and on a real Redis) and the routing every client does through it."""

from __future__ import annotations

import time
import uuid

import pytest
import realparts

from foundation.registry import (
    Heartbeat,
    LocalRegistry,
    NoWorker,
    RedisRegistry,
    WorkerPool,
    WorkerRecord,
    open_registry,
)

REDIS = "redis://127.0.0.1:6379/10"


@pytest.fixture
def redis_registry():
    with realparts.redis_registry(REDIS, prefix=f"test:{uuid.uuid4().hex}") as registry:
        yield registry


def record(address: str, running: int = 0, waiting: int = 0, max_running: int = 4) -> WorkerRecord:
    return WorkerRecord(address, "tiny", "fp", running, waiting, max_running)


@pytest.mark.parametrize("kind", ["local", "redis"])
def test_workers_are_listed_while_they_heartbeat_and_sessions_map_to_their_holder(kind, request):
    registry = LocalRegistry() if kind == "local" else request.getfixturevalue("redis_registry")
    registry.announce(record("a:1", running=2), ["s1", "s2"], ttl_s=0.5)
    registry.announce(record("b:1"), ["s3"], ttl_s=30)
    assert {w.address: w.running for w in registry.workers()} == {"a:1": 2, "b:1": 0}
    assert (registry.holder("s1"), registry.holder("s3"), registry.holder("nope")) == ("a:1", "b:1", None)
    registry.claim("s4", "b:1", ttl_s=30)
    assert registry.holder("s4") == "b:1"
    time.sleep(0.7)  # a:1 stopped heartbeating: it and its sessions are gone
    assert [w.address for w in registry.workers()] == ["b:1"] and registry.holder("s1") is None
    registry.withdraw("b:1")
    assert registry.workers() == []


def test_a_local_registry_always_lists_its_configured_workers():
    registry = open_registry(None, ["a:1", "b:1"])
    assert sorted(w.address for w in registry.workers()) == ["a:1", "b:1"]
    registry.announce(record("a:1", running=3), [], ttl_s=30)  # an announced record wins over the static one
    assert {w.address: w.running for w in registry.workers()} == {"a:1": 3, "b:1": 0}
    with pytest.raises(ValueError):
        open_registry(None, [])
    with pytest.raises(ValueError):
        open_registry("etcd://x", ["a:1"])


def pool(registry, **options) -> WorkerPool:
    return WorkerPool(registry, lambda address: f"client of {address}", **options)


def test_a_session_goes_to_its_holder_until_it_is_overloaded_or_lost():
    registry = LocalRegistry()
    registry.announce(record("a:1", running=1), ["s"], ttl_s=30)
    registry.announce(record("b:1", running=0), [], ttl_s=30)
    workers = pool(registry, cooldown_s=0.3)
    assert workers.route("s") == "a:1"  # hot there, though b is less loaded
    assert workers.route() == "b:1"  # a new session: the least loaded
    assert workers.connect("s") == ("a:1", "client of a:1")
    registry.announce(record("a:1", running=4, waiting=2), ["s"], ttl_s=30)  # queueing: the session moves
    assert workers.route("s") == "b:1" and registry.holder("s") == "b:1"
    registry.announce(record("a:1", running=0), ["s"], ttl_s=30)
    workers.lost("a:1")  # a failed call: skipped here for the cooldown, whatever the registry says
    assert workers.route("s") == "b:1" and workers.route() == "b:1"
    time.sleep(0.35)
    assert workers.route("s") == "b:1"  # it stays where it moved
    assert workers.route("s", exclude={"b:1"}) == "a:1"
    with pytest.raises(NoWorker):
        workers.route("s", exclude={"a:1", "b:1"})


def test_requests_of_one_affinity_go_to_one_worker_while_its_load_allows():
    registry = LocalRegistry()
    for address in ("a:1", "b:1", "c:1"):
        registry.announce(record(address, running=0), [], ttl_s=30)
    workers = pool(registry)
    chosen = {key: workers.route(affinity=key) for key in (f"conversation-{i}" for i in range(12))}
    assert all(workers.route(affinity=key) == address for key, address in chosen.items())  # stable
    assert len(set(chosen.values())) == 3  # and spread over the workers
    key, address = next(iter(chosen.items()))
    registry.announce(record(address, running=4, waiting=2), [], ttl_s=30)  # queueing: the least loaded instead
    assert workers.route(affinity=key) != address
    registry.announce(record(address, running=0), [], ttl_s=30)
    assert workers.route(affinity=key) == address


def test_a_hint_places_a_session_nobody_claims_and_equal_loads_take_turns():
    workers = pool(LocalRegistry(["a:1", "b:1", "c:1"]))
    assert workers.route("s", hint="c:1") == "c:1"
    assert workers.route("s", hint="gone:1") in {"a:1", "b:1", "c:1"}
    assert sorted(workers.route() for _ in range(3)) == ["a:1", "b:1", "c:1"]
    workers.placed("t", "b:1")
    assert workers.route("t", hint="a:1") == "b:1"  # the registry knows better than the caller's old note


def test_the_heartbeat_announces_at_once_renews_and_withdraws(redis_registry):
    beats = []

    def snapshot():
        beats.append(time.time())
        return record("w:1", running=len(beats)), [f"s{len(beats)}"]

    heartbeat = Heartbeat(redis_registry, snapshot, every_s=0.1).start()
    assert [w.address for w in redis_registry.workers()] == ["w:1"]  # listed before start returns
    time.sleep(0.35)
    assert redis_registry.workers()[0].running >= 3 and redis_registry.holder(f"s{len(beats)}") == "w:1"
    assert redis_registry.workers()[0].seen > 0
    heartbeat.stop()
    assert WorkerPool(RedisRegistry(REDIS, prefix=redis_registry.prefix), str).registry.workers() == []
