"""Session commits are written off the engine thread (it never waits on storage) and before the reply's final
message; a commit that cannot be written (the tenant's byte cap) fails its request with RESOURCE_EXHAUSTED and leaves
the session at its last written commit, which the next request continues; commits waiting for the store are bounded;
an unfinished last commit (its writer died on a store without atomic writes) gives way to the one before."""

from __future__ import annotations

import threading

import grpc
import pytest
from server_testlib import Worker, run, user

from model_worker.engine.loading import load_model
from model_worker.sessions.commits import CommitWriter, PreparedCommit
from model_worker.sessions.errors import StoreBehind
from model_worker.sessions.manifest import Commit, Head, blob_key, tenant_key
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
        with pytest.raises(grpc.RpcError) as refused:  # a commit per token or two would flood the store
            run(worker.stub, pb.GenerateRequest(session_id="s", messages=user("hi"), sampling=greedy, commit_every=2))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "at least 32" in refused.value.details()
        _, final = run(worker.stub, pb.GenerateRequest(session_id="s", messages=user("hi"), sampling=greedy,
                                                       commit_every=32))
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


def test_an_unfinished_last_commit_gives_way_to_the_one_before_after_a_restart(model, tmp_path):
    worker = Worker(model, tmp_path)
    greedy = pb.SamplingParams(temperature=0.0, max_tokens=3)
    try:
        worker.stub.CreateSession(pb.CreateSessionRequest(session_id="s"))
        for text in ("one", "two"):  # each turn commits at the end of its input and of its reply
            run(worker.stub, pb.GenerateRequest(session_id="s", messages=user(text), sampling=greedy))
        tk, store = tenant_key("default"), worker.runtime.store
        last, before = list(store.valid_commits(tk, "s"))[:2]
    finally:
        worker.stop()
    path = tmp_path / blob_key(tk, last.tail)  # the last commit's own value
    path.write_bytes(path.read_bytes()[:-64])  # what a store without atomic writes keeps of a killed writer's value
    worker = Worker(model, tmp_path)
    try:
        _, again = run(worker.stub, pb.GenerateRequest(session_id="s", messages=user("three"), sampling=greedy))
        assert again.usage.reused_tokens == before.num_tokens and not again.usage.session_rebuilt
        assert [c.seq for c in worker.runtime.store.valid_commits(tk, "s")][:2] == [last.seq + 1, last.seq]
    finally:
        worker.stop()


class StalledBlobs:
    """A store whose writes wait until released."""

    def __init__(self, blobs) -> None:
        self.blobs, self.release, self.writes = blobs, threading.Event(), 0

    def __getattr__(self, name):
        return getattr(self.blobs, name)

    def put_if_absent(self, key, data):
        self.release.wait()
        self.writes += 1
        return self.blobs.put_if_absent(key, data)


def _prepared(session_id: str, seq: int, nbytes: int) -> PreparedCommit:
    import torch

    record = Commit(session_id, seq, "f", "l", 0, 0, None, "", "tail", Head(), 0.0)
    values = [(blob_key("t", f"{session_id}-{seq}"), {"x": torch.zeros(nbytes, dtype=torch.uint8)}, {})]
    return PreparedCommit("t", session_id, values, record, repair=False)


def test_prepared_commits_waiting_for_a_slow_store_are_bounded(model, tmp_path):
    worker = Worker(model, tmp_path)
    blobs = StalledBlobs(worker.runtime.store.blobs)
    worker.runtime.store.blobs = blobs
    writer = CommitWriter(worker.runtime.store, max_pending_bytes=1000, wait_s=0.5)
    try:
        first = writer.submit(_prepared("a", 0, 800))  # one commit may exceed the bound alone
        assert writer.pending_bytes == 800
        # No room for a second while the store holds the first: after wait_s it fails, and so does the
        # session's next commit, which builds on it; another session's commit is written once the store moves.
        refused = writer.submit(_prepared("b", 0, 400))
        assert writer.pending_bytes == 800 and blobs.writes == 0
        blobs.release.set()
        assert first.result(timeout=30).seq == 0
        with pytest.raises(StoreBehind):
            refused.result(timeout=30)
        with pytest.raises(StoreBehind):
            writer.submit(_prepared("b", 1, 400)).result(timeout=30)
        assert writer.submit(_prepared("c", 0, 400)).result(timeout=30).seq == 0
        assert writer.pending_bytes == 0
    finally:
        blobs.release.set()
        writer.close()
        worker.stop()
