"""Session blob stores: FsspecBlobs on a temporary directory (given as a plain path and as a file:// URL) and on
fsspec's memory filesystem, and RedisBlobs on the local Redis server, all held to one contract (get, put, put_if_absent,
exists, delete, list, folders, size, written_at); local-directory specifics (no leftover or listed `.partial-*` files,
`put_if_absent` atomic across processes); and `open_blobs` choosing the backend from the URL."""

from __future__ import annotations

import multiprocessing
import os
import random
import time
import uuid
from collections.abc import Iterator

import pytest
from blob_claim import claim_keys

from foundation.blobs.keys import glob_escape
from foundation.blobs.stores import FsspecBlobs, RedisBlobs, open_blobs

REDIS_URL = "redis://127.0.0.1:6379/0"
BACKENDS = ["path", "file-url", "memory", "redis"]
LOCAL_BACKENDS = ["path", "file-url"]


def _unique(tag: str) -> str:
    return f"dsv4-test-{tag}-{uuid.uuid4().hex}"


def _redis_store() -> Iterator[RedisBlobs]:
    redis = pytest.importorskip("redis")
    prefix = _unique("blobs") + ":"
    store = RedisBlobs(f"{REDIS_URL}?prefix={prefix}")
    try:
        store.client.ping()
    except redis.exceptions.RedisError as exc:
        pytest.skip(f"no Redis server at {REDIS_URL}: {exc}")
    try:
        yield store
    finally:
        pattern = glob_escape(prefix) + "*"
        leftover = list(store.client.scan_iter(match=pattern, count=1000))
        if leftover:
            store.client.delete(*leftover)
        assert not list(store.client.scan_iter(match=pattern, count=1000))
        store.client.close()


def _memory_store() -> Iterator[FsspecBlobs]:
    store = FsspecBlobs(f"memory://{_unique('blobs')}")
    try:
        yield store
    finally:
        if store.fs.exists(store.root):
            store.fs.rm(store.root, recursive=True)


def _make_store(kind: str, tmp_path) -> Iterator:
    if kind == "path":
        yield FsspecBlobs(str(tmp_path / "blobs"))
    elif kind == "file-url":
        yield FsspecBlobs(f"file://{tmp_path / 'blobs'}")
    elif kind == "memory":
        yield from _memory_store()
    else:
        yield from _redis_store()


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    yield from _make_store(request.param, tmp_path)


@pytest.fixture(params=LOCAL_BACKENDS)
def local_store(request, tmp_path):
    yield from _make_store(request.param, tmp_path)


def _partials(root: str) -> list[str]:
    return [os.path.join(d, name) for d, _, names in os.walk(root) for name in names if name.startswith(".partial-")]


# --- the contract, on every backend ---------------------------------------------------------------------------------


def test_get_of_missing_key_is_none(store):
    assert store.get("t/none/here") is None
    assert store.get("missing") is None


@pytest.mark.parametrize("data", [b"x", b"", bytes(range(256)), random.Random(7).randbytes(100_000)],
                         ids=["one-byte", "empty", "all-byte-values", "100k-random"])
def test_put_then_get_round_trips(store, data):
    store.put("t/k/b/value", data)
    got = store.get("t/k/b/value")
    assert isinstance(got, bytes)
    assert got == data


def test_put_replaces(store):
    store.put("t/k/v", b"first value, long")
    store.put("t/k/v", b"second")
    assert store.get("t/k/v") == b"second"
    store.put("t/k/v", b"")
    assert store.get("t/k/v") == b""


def test_keys_are_independent(store):
    store.put("t/a/1", b"one")
    store.put("t/a/2", b"two")
    store.put("t/b/1", b"three")
    assert (store.get("t/a/1"), store.get("t/a/2"), store.get("t/b/1")) == (b"one", b"two", b"three")


def test_put_if_absent_claims_once(store):
    assert store.put_if_absent("t/k/s/id/meta", b"mine") is True
    assert store.get("t/k/s/id/meta") == b"mine"
    assert store.put_if_absent("t/k/s/id/meta", b"theirs") is False
    assert store.get("t/k/s/id/meta") == b"mine"
    assert store.put_if_absent("t/k/s/id/meta", b"mine") is False


def test_put_if_absent_after_put_and_after_delete(store):
    store.put("key", b"put")
    assert store.put_if_absent("key", b"claim") is False
    assert store.get("key") == b"put"
    store.delete("key")
    assert store.put_if_absent("key", b"claim") is True
    assert store.get("key") == b"claim"


def test_exists(store):
    assert not store.exists("t/k/x")
    store.put("t/k/x", b"1")
    assert store.exists("t/k/x")
    assert not store.exists("t/k/y")
    store.put("t/k/empty", b"")
    assert store.exists("t/k/empty")


def test_delete(store):
    store.put("t/k/x", b"1")
    store.put("t/k/y", b"2")
    store.delete("t/k/x")
    assert store.get("t/k/x") is None
    assert not store.exists("t/k/x")
    assert store.size("t/k/x") is None
    assert store.written_at("t/k/x") is None
    assert store.get("t/k/y") == b"2"
    assert list(store.list("t/k/")) == ["t/k/y"]


def test_delete_of_missing_key_is_fine(store):
    store.delete("t/never/written")
    store.put("t/k/x", b"1")
    store.delete("t/k/x")
    store.delete("t/k/x")
    assert store.get("t/k/x") is None


def test_list_returns_exactly_the_keys_under_a_prefix(store):
    keys = ["t/a/x", "t/a/b/x", "t/a/b/c/y", "t/ab/z", "t/ab/c/x", "t/b/w", "u/a/v", "t/a-1/q"]
    for key in keys:
        store.put(key, key.encode())
    assert sorted(store.list("t/a/")) == ["t/a/b/c/y", "t/a/b/x", "t/a/x"]
    assert sorted(store.list("t/a/b/")) == ["t/a/b/c/y", "t/a/b/x"]
    assert sorted(store.list("t/ab/")) == ["t/ab/c/x", "t/ab/z"]
    assert sorted(store.list("t/")) == sorted(k for k in keys if k.startswith("t/"))
    assert sorted(store.list("u/")) == ["u/a/v"]
    assert list(store.list("nothing/")) == []
    assert list(store.list("t/a/nothing/")) == []
    listed = list(store.list("t/a/"))
    assert len(listed) == len(set(listed))


def test_list_of_everything_and_after_deletes(store):
    keys = ["t/a/x", "t/a/b/x", "s/y"]
    for key in keys:
        store.put(key, b"v")
    assert sorted(store.list("")) == sorted(keys)
    store.delete("t/a/b/x")
    assert sorted(store.list("t/a/")) == ["t/a/x"]
    store.delete("t/a/x")
    assert list(store.list("t/a/")) == []
    assert sorted(store.list("")) == ["s/y"]


def test_folders_names_the_folders_directly_under_a_prefix(store):
    for key in ["t/a/s/x/meta", "t/a/b/v", "t/c/salt", "t/top", "u/v"]:
        store.put(key, b"v")
    assert sorted(store.folders("t/")) == ["a", "c"]
    assert sorted(store.folders("t/a/")) == ["b", "s"]
    assert sorted(store.folders("")) == ["t", "u"]
    assert list(store.folders("t/a/b/")) == [] and list(store.folders("nothing/")) == []


def test_list_sees_keys_written_by_put_if_absent(store):
    store.put_if_absent("t/k/s/one/meta", b"1")
    store.put("t/k/s/two/meta", b"2")
    assert sorted(store.list("t/k/s/")) == ["t/k/s/one/meta", "t/k/s/two/meta"]


def test_size(store):
    assert store.size("t/k/missing") is None
    store.put("t/k/v", b"12345")
    assert store.size("t/k/v") == 5
    store.put("t/k/v", bytes(1000))
    assert store.size("t/k/v") == 1000
    store.put("t/k/empty", b"")
    assert store.size("t/k/empty") == 0


def test_written_at(store):
    assert store.written_at("t/k/missing") is None
    before = time.time()
    store.put("t/k/v", b"data")
    store.put_if_absent("t/k/claimed", b"data")
    after = time.time()
    for key in ("t/k/v", "t/k/claimed"):
        stamp = store.written_at(key)
        assert isinstance(stamp, float)
        assert before - 2.0 <= stamp <= after + 2.0, (key, before, stamp, after)


def test_url_is_kept(store):
    assert isinstance(store.url, str) and store.url


# --- local directories -----------------------------------------------------------------------------------------------


def test_local_put_leaves_no_partial_files(local_store):
    local_store.put("t/k/b/one", b"1" * 10_000)
    local_store.put("t/k/b/one", b"2")
    assert local_store.put_if_absent("t/k/s/id/meta", b"claim") is True
    assert local_store.put_if_absent("t/k/s/id/meta", b"again") is False
    local_store.put("top", b"3")
    assert _partials(local_store.root) == []
    assert sorted(local_store.list("")) == ["t/k/b/one", "t/k/s/id/meta", "top"]


def test_local_list_never_yields_partial_files(local_store):
    local_store.put("t/a/x", b"1")
    for directory in ("t/a", "t/a/b", "t"):
        os.makedirs(os.path.join(local_store.root, directory), exist_ok=True)
        with open(os.path.join(local_store.root, directory, ".partial-abc123"), "wb") as f:
            f.write(b"half a value")
    assert len(_partials(local_store.root)) == 3
    assert list(local_store.list("t/a/")) == ["t/a/x"]
    assert list(local_store.list("t/")) == ["t/a/x"]
    assert list(local_store.list("")) == ["t/a/x"]


def test_local_values_are_files_under_the_root(local_store, tmp_path):
    local_store.put("t/k/b/v", b"on disk")
    assert local_store.root == str(tmp_path / "blobs")
    with open(tmp_path / "blobs" / "t" / "k" / "b" / "v", "rb") as f:
        assert f.read() == b"on disk"


def test_local_relative_plain_path_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = FsspecBlobs("relative/store")
    assert store.url == "relative/store"
    assert store.root == str(tmp_path / "relative" / "store")
    assert os.path.isdir(tmp_path / "relative" / "store")
    store.put("k", b"v")
    monkeypatch.chdir("/")
    assert store.get("k") == b"v"


def test_two_stores_on_one_directory_share_values(tmp_path):
    a = FsspecBlobs(str(tmp_path / "shared"))
    b = FsspecBlobs(f"file://{tmp_path / 'shared'}")
    a.put("t/k/v", b"from a")
    assert b.get("t/k/v") == b"from a"
    assert b.put_if_absent("t/k/v", b"from b") is False


def test_local_put_if_absent_is_atomic_across_processes(tmp_path):
    root = str(tmp_path / "race")
    FsspecBlobs(root)
    keys = [f"t/k/s/id-{i}/meta" for i in range(12)]
    racers = 4
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(racers), ctx.Queue()
    payloads = [f"worker-{i}|".encode() * 4096 for i in range(racers)]
    procs = [ctx.Process(target=claim_keys, args=(root, keys, data, start, results))
             for data in payloads]
    for proc in procs:
        proc.start()
    try:
        outcomes = dict(results.get(timeout=60) for _ in procs)
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    assert all(proc.exitcode == 0 for proc in procs)
    store = FsspecBlobs(root)
    for key in keys:
        winners = [data for data, claimed in outcomes.items() if claimed[key]]
        assert len(winners) == 1, (key, len(winners))
        assert store.get(key) == winners[0]
    assert _partials(root) == []
    assert sorted(store.list("t/")) == sorted(keys)


# --- memory and Redis specifics ---------------------------------------------------------------------------------------


def test_memory_stores_with_different_names_are_separate():
    first, second = _memory_store(), _memory_store()
    a, b = next(first), next(second)
    try:
        a.put("t/k/v", b"a")
        assert b.get("t/k/v") is None
        assert list(b.list("t/")) == []
        assert not b.local and not a.local
    finally:
        first.close()
        second.close()


def test_redis_prefixes_are_separate():
    first, second = _redis_store(), _redis_store()
    a = next(first)
    try:
        b = next(second)
        try:
            a.put("t/k/v", b"a")
            assert b.get("t/k/v") is None
            assert list(b.list("")) == []
            assert b.written_at("t/k/v") is None
        finally:
            second.close()
    finally:
        first.close()


def test_redis_list_does_not_yield_its_indexes():
    gen = _redis_store()
    store = next(gen)
    try:
        store.put("k", b"v")
        store.put("t/a/b", b"v")
        assert store.client.exists(store.prefix + "\0d:") and store.client.exists(store.prefix + "\0d:t/a/")
        assert sorted(store.list("")) == ["k", "t/a/b"]
    finally:
        gen.close()


def test_redis_prefix_with_glob_characters_is_literal():
    redis = pytest.importorskip("redis")
    prefix = _unique("glob") + "[x]*?:"
    store = RedisBlobs(f"{REDIS_URL}?prefix={prefix}")
    other = RedisBlobs(f"{REDIS_URL}?prefix={prefix.replace('[x]', 'x')}")
    try:
        store.client.ping()
    except redis.exceptions.RedisError as exc:
        pytest.skip(f"no Redis server at {REDIS_URL}: {exc}")
    try:
        store.put("t/a[1]/x*", b"1")
        other.put("t/a1/x", b"2")
        assert list(store.list("t/a[1]/")) == ["t/a[1]/x*"]
        assert list(other.list("t/")) == ["t/a1/x"]
    finally:
        for s in (store, other):
            for key in list(s.list("")):
                s.delete(key)
            s.client.delete(s.prefix + "\0layout")
            assert not list(s.client.scan_iter(match=glob_escape(s.prefix) + "*"))
            s.client.close()


# --- open_blobs ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/3?prefix=x:",
                                 "rediss://example.invalid:6380/0", "unix:///tmp/redis.sock?db=0"])
def test_open_blobs_picks_redis(url):
    store = open_blobs(url)
    assert isinstance(store, RedisBlobs)
    assert store.url == url


def test_redis_prefix_comes_from_the_url():
    assert open_blobs("redis://127.0.0.1:6379/0?prefix=tenant-a:").prefix == "tenant-a:"
    assert open_blobs("redis://127.0.0.1:6379/0").prefix == "dsv4:"


def test_open_blobs_picks_fsspec_otherwise(tmp_path):
    for url in (str(tmp_path / "plain"), f"file://{tmp_path / 'url'}"):
        store = open_blobs(url)
        assert isinstance(store, FsspecBlobs) and store.local
        assert store.url == url
    name = f"memory://{_unique('open')}"
    store = open_blobs(name)
    try:
        assert isinstance(store, FsspecBlobs) and not store.local
        store.put("k", b"v")
        assert open_blobs(name).get("k") == b"v"
    finally:
        store.fs.rm(store.root, recursive=True)


def test_a_local_write_is_durable_in_its_directory_too(tmp_path, monkeypatch):
    """The value's bytes, then its name: the directory holding the new entry is flushed after the rename (or link),
    and so is each new directory's parent, so a crash after `put` returns cannot lose the key."""
    store, flushed = FsspecBlobs(str(tmp_path / "root")), []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        flushed.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    store.put("t/a/s/x/c/000000000001", b"record")
    root = str(tmp_path / "root")
    leaf = f"{root}/t/a/s/x/c"
    assert flushed[-1] == leaf  # the new name, after the value's bytes
    assert any(path.startswith(f"{leaf}/.partial-") for path in flushed)
    assert {root, f"{root}/t", f"{root}/t/a", f"{root}/t/a/s", f"{root}/t/a/s/x"} <= set(flushed)  # new directories
    flushed.clear()
    assert store.put_if_absent("t/a/s/x/c/000000000002", b"claim")
    assert flushed[-1] == leaf
