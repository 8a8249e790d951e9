"""Session commits are written off the engine thread (it never waits on storage) and before the reply's final
message; a commit that cannot be written (the tenant's byte cap) fails its request with RESOURCE_EXHAUSTED and leaves
the session at its last written commit, which the next request continues."""

from __future__ import annotations

import threading

import grpc
import pytest
from test_server import Worker, run, user

from model_worker.engine.loading import load_model
from model_worker.sessions.manifest import tenant_key
from protos.dsv4.worker.v1 import worker_pb2 as pb


class ThreadLog:
    """Wraps a blob store and records which thread wrote each value."""

    def __init__(self, blobs) -> None:
        self.blobs, self.url, self.writers = blobs, blobs.url, []

    def __getattr__(self, name):
        return getattr(self.blobs, name)

    def put(self, key, data):
        self.writers.append(threading.current_thread().name)
        return self.blobs.put(key, data)

    def put_if_absent(self, key, data):
        self.writers.append(threading.current_thread().name)
        return self.blobs.put_if_absent(key, data)


@pytest.fixture(scope="module")
def model():
    return load_model(None, "tiny", numerics="official")


def test_commits_are_written_by_the_writer_thread_before_the_final(model, tmp_path):
    worker = Worker(model, tmp_path)
    store = worker.runtime.store
    store.blobs = log = ThreadLog(store.blobs)
    try:
        worker.stub.CreateSession(pb.CreateSessionRequest(session_id="s", system_prompt="be brief"))
        greedy = pb.SamplingParams(temperature=0.0, max_tokens=4)
        _, final = run(worker.stub, pb.GenerateRequest(session_id="s", messages=user("hi"), sampling=greedy,
                                                       commit_every=2))
        # Written when the final arrived: a fresh store sees the session at the reply's length.
        assert store.read_commit(tenant_key("default"), "s", None).num_tokens == final.usage.session_tokens
        engine_writes = [name for name in log.writers if name == "engine"]
        assert log.writers and not engine_writes and "commit-writer" in log.writers
    finally:
        worker.stop()


def test_a_commit_over_the_byte_cap_fails_its_request_and_the_session_stays(model, tmp_path):
    worker = Worker(model, tmp_path)
    store = worker.runtime.store
    try:
        worker.stub.CreateSession(pb.CreateSessionRequest(session_id="s"))
        greedy = pb.SamplingParams(temperature=0.0, max_tokens=3)
        _, first = run(worker.stub, pb.GenerateRequest(session_id="s", messages=user("one"), sampling=greedy))
        store.tenant_quota_bytes = 1  # every further commit is over the cap
        with pytest.raises(grpc.RpcError) as refused:
            run(worker.stub, pb.GenerateRequest(session_id="s", messages=user("two"), sampling=greedy))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        session = worker.stub.GetSession(pb.GetSessionRequest(session_id="s"))
        assert session.tokens == first.usage.session_tokens
        store.tenant_quota_bytes = None
        _, again = run(worker.stub, pb.GenerateRequest(session_id="s", messages=user("two"), sampling=greedy))
        assert again.usage.reused_tokens == first.usage.session_tokens  # continued from the last written commit
    finally:
        worker.stop()
