"""Fixtures of the session store tests: the small real model (once per module; sessions_testlib.py), a store on
files in the test's own folder, and an empty key space on the machine's Redis (skipped without one)."""

from __future__ import annotations

import uuid

import pytest
from sessions_testlib import small_model

from model_worker.model import DeepseekV4
from model_worker.sessions import SessionStore, open_blobs


@pytest.fixture(scope="module")
def model() -> DeepseekV4:
    return small_model()


@pytest.fixture
def store(tmp_path, model) -> SessionStore:
    return SessionStore(open_blobs(str(tmp_path / "sessions")), model.fingerprint, model.layout)


@pytest.fixture
def redis_url():
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/0").ping()
    except redis.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    url = f"redis://127.0.0.1:6379/0?prefix=test-sessions-{uuid.uuid4().hex}:"
    yield url
    blobs = open_blobs(url)
    for key in list(blobs.list("")):
        blobs.delete(key)
    blobs.client.delete(blobs.prefix + "\0layout")
