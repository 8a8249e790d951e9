"""kill -9 during commits (a real subprocess, on disk and on Redis): the session opens at a complete commit, its state
is exactly what a process that never crashed computes for that token log, and a torn commit record is skipped."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from crash_writer import CHUNK, TOKENS, small_model

from model_worker.model import ForwardBatch
from model_worker.sessions import SessionStore, open_blobs
from model_worker.sessions.manifest import commit_key, tenant_key

HERE = Path(__file__).parent


def _redis_url() -> str:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/0").ping()
    except redis.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    return f"redis://127.0.0.1:6379/0?prefix=test-crash-{os.getpid()}:"


@pytest.fixture(params=["disk", "redis"])
def url(request, tmp_path) -> str:
    if request.param == "disk":
        yield f"file://{tmp_path}/store"
        return
    url = _redis_url()
    yield url
    blobs = open_blobs(url)
    for key in list(blobs.list("")):
        blobs.delete(key)


def _kill_during_commits(url: str, session_id: str, commits_before: int, rng: random.Random) -> int:
    """Run the writer until it has announced `commits_before` more commits, wait a random moment, SIGKILL it;
    returns the token count of its last announced commit."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parents[2]), str(HERE.parents[1]), str(HERE)])}
    child = subprocess.Popen([sys.executable, str(HERE / "crash_writer.py"), url, session_id], stdout=subprocess.PIPE,
                             text=True, env=env)
    last, seen = 0, 0
    try:
        while seen < commits_before:
            line = child.stdout.readline()
            assert line, f"writer exited early ({child.wait()})"
            last, seen = int(line.split()[1]), seen + 1
        time.sleep(rng.uniform(0.0, 0.12))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    for line in child.stdout:  # announced after we stopped reading, before the kill
        last = int(line.split()[1])
    return last


def test_kill_9_mid_commit_leaves_the_previous_commit(url: str) -> None:
    rng = random.Random(7)
    model = small_model()
    store = SessionStore(open_blobs(url), model.fingerprint, model.layout)
    announced = 0
    for round_ in range(3):
        announced = _kill_during_commits(url, "victim", 2, rng)
        session = store.open("acme", "victim")
        # the interrupted commit either became visible whole (its record was written) or not at all
        assert len(session.token_ids) in (announced, announced + CHUNK), (round_, announced, len(session.token_ids))
        assert not session.rebuilt and session.token_ids == TOKENS[: len(session.token_ids)]
    # the resumed state is exactly that of one process feeding the same chunks
    fresh = model.new_state()
    for start in range(0, len(session.token_ids), CHUNK):
        model(ForwardBatch.single(session.token_ids[start : start + CHUNK], fresh, logits="none"))
    expected = model(ForwardBatch.single([9], fresh)).logits
    assert torch.equal(model(ForwardBatch.single([9], session.state)).logits, expected)


def test_a_torn_commit_record_is_skipped(tmp_path) -> None:
    model = small_model()
    store = SessionStore(open_blobs(str(tmp_path)), model.fingerprint, model.layout)
    session = store.create("acme", session_id="s")
    model(ForwardBatch.single(TOKENS[:50], session.state, logits="none"))
    store.commit(session, TOKENS[:50])
    model(ForwardBatch.single(TOKENS[50:90], session.state, logits="none"))
    store.commit(session, TOKENS[50:90])
    key = commit_key(tenant_key("acme"), "s", 1)
    store.blobs.put(key, store.blobs.get(key)[:-25])  # what a non-atomic store leaves when the writer dies
    assert store.open("acme", "s").token_ids == TOKENS[:50]
