"""Batches end to end on real parts: PostgreSQL, Redis as the broker, Celery worker processes and a model worker
process. Every valid request completes exactly once (one result row, one usage row), results come back as OpenAI
batch output lines, cancellation stops running requests with their partial output, and a pool child killed mid-job
does not lose or double its request."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from realparts import start_celery
from sqlalchemy import func, select

from model_worker.sessions import open_blobs
from services.jobs import celery_app
from services.jobs.db import make_engine, sessions
from services.jobs.job_store import JobStore
from services.jobs.settings import JobsSettings
from services.jobs.tables import BatchRequest, Result, UsageLedger
from services.jobs.use_cases import Jobs


def request_line(custom_id: str, max_tokens: int, effort: str = "none", **body) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"messages": [{"role": "user", "content": f"say {custom_id}"}],
                                "reasoning_effort": effort, "max_tokens": max_tokens, "temperature": 0, **body}})


@pytest.fixture(scope="module")
def setup(tmp_path_factory, database_url, broker_url, model_worker):
    root = tmp_path_factory.mktemp("jobs")
    target, _ = model_worker
    # Short leases and a reaper every second so faults heal fast; every response is stored outside its row.
    settings = dict(database_url=database_url, broker_url=broker_url, worker_target=target,
                    result_store=str(root / "results"), lease_seconds=3, requeue_after_seconds=2,
                    reap_every_seconds=1, longest_job_seconds=600, inline_output_bytes=200)
    celery = start_celery(root, "w1", beat=True, **settings)
    celery_app.configure(JobsSettings(**settings))  # this process publishes to the same broker
    jobs = Jobs(JobStore(sessions(make_engine(database_url))), celery_app.CeleryPublisher(),
                open_blobs(str(root / "results")))
    jobs.settings = settings
    yield jobs, celery
    celery.stop()


def wait_until_ended(jobs: Jobs, batch_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = jobs.get("acme", batch_id)
        if view["status"] in ("completed", "failed", "expired", "cancelled"):
            return view
        time.sleep(0.2)
    raise TimeoutError(f"batch {batch_id} still {jobs.get('acme', batch_id)}")


def ledger_rows(jobs: Jobs, batch_id: str) -> dict[str, int]:
    with jobs.store.sessions() as s:
        results = s.scalar(select(func.count()).select_from(Result).where(Result.batch_id == batch_id))
        usage = s.scalar(select(func.count()).select_from(UsageLedger).where(UsageLedger.batch_id == batch_id))
        attempts = s.scalar(select(func.sum(BatchRequest.attempts)).where(BatchRequest.batch_id == batch_id))
    return {"results": results, "usage": usage, "attempts": attempts}


def test_a_batch_completes_exactly_once_with_openai_shaped_results(setup):
    jobs, _ = setup
    lines = [request_line(f"r{i}", 4, effort="max" if i % 2 else "none") for i in range(6)]
    lines.insert(2, "{broken")
    batch = jobs.submit_jsonl("acme", "\n".join(lines))
    assert batch["errors"]["data"] == [{"code": "invalid_request", "line": 3, "message": batch["errors"]["data"][0]
                                        ["message"]}]
    view = wait_until_ended(jobs, batch["id"])
    assert view["status"] == "completed" and view["request_counts"] == {"total": 6, "completed": 6, "failed": 0}
    assert ledger_rows(jobs, batch["id"]) == {"results": 6, "usage": 6, "attempts": 6}
    with jobs.store.sessions() as s:  # stored outside the rows (over the inline limit), read back below
        assert all(s.scalars(select(Result.output_ref).where(Result.batch_id == batch["id"])).all())
    results = list(jobs.results("acme", batch["id"]))
    assert [r["custom_id"] for r in results] == [f"r{i}" for i in range(6)]
    for result in results:
        body = result["response"]["body"]
        assert result["error"] is None and body["object"] == "chat.completion"
        assert body["usage"]["completion_tokens"] <= 4 and body["choices"][0]["finish_reason"] in ("length", "stop")


def test_cancel_stops_running_requests_and_keeps_their_partial_output(setup):
    jobs, _ = setup
    batch = jobs.submit_jsonl("acme", "\n".join(request_line(f"long{i}", 3000, temperature=1.0, seed=i)
                                                for i in range(4)))
    deadline = time.monotonic() + 60
    while not any(p["tokens"] for p in jobs.store.progress(batch["id"])):
        assert time.monotonic() < deadline, "no request started decoding"
        time.sleep(0.2)
    jobs.cancel("acme", batch["id"])
    view = wait_until_ended(jobs, batch["id"], timeout=60)
    assert view["status"] == "cancelled"
    results = list(jobs.results("acme", batch["id"]))
    partial = [r for r in results if r["response"] is not None]
    assert partial and all(r["error"]["code"] == "batch_cancelled" for r in results)
    assert all(r["response"]["body"]["choices"][0]["finish_reason"] == "cancelled" for r in partial)
    assert ledger_rows(jobs, batch["id"])["usage"] == 4


def test_a_pool_child_killed_mid_job_neither_loses_nor_doubles_its_request(setup):
    jobs, _ = setup
    batch = jobs.submit_jsonl("acme", request_line("victim", 400, temperature=1.0, seed=3))
    deadline = time.monotonic() + 60
    while not jobs.store.progress(batch["id"])[0]["tokens"]:
        assert time.monotonic() < deadline, "the request did not start"
        time.sleep(0.1)
    with jobs.store.sessions() as s:  # the lease names the pool child that runs it: host:pid
        owner = s.scalar(select(BatchRequest.lease_owner).where(BatchRequest.batch_id == batch["id"]))
    os.kill(int(owner.rsplit(":", 1)[1]), signal.SIGKILL)
    view = wait_until_ended(jobs, batch["id"], timeout=120)
    assert view["status"] == "completed"
    rows = ledger_rows(jobs, batch["id"])
    assert rows["results"] == rows["usage"] == 1 and rows["attempts"] >= 2


def test_the_grpc_api(setup, tmp_path):
    import grpc

    from protos.dsv4.jobs.v1 import jobs_pb2 as jpb
    from protos.dsv4.jobs.v1 import jobs_pb2_grpc
    from protos.dsv4.worker.v1 import worker_pb2 as wpb
    from services.jobs.server import build_server

    jobs, _ = setup
    server, port = build_server(jobs, "127.0.0.1", 0, api_keys={"k-acme": "acme", "k-other": "other"})
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = jobs_pb2_grpc.JobsStub(channel)
    acme, other = [("authorization", "Bearer k-acme")], [("authorization", "Bearer k-other")]
    try:
        def job(custom_id: str) -> jpb.JobRequest:
            return jpb.JobRequest(custom_id=custom_id, messages=[wpb.ChatMessage(role="user", content="hi")],
                                  mode=wpb.NON_THINK, sampling=wpb.SamplingParams(temperature=0.0, max_tokens=3))

        batch = stub.CreateBatch(jpb.CreateBatchRequest(requests=jpb.JobRequests(
            requests=[job("a"), job(""), job("b"), job("a")]), metadata={"run": "grpc"}), metadata=acme)
        assert [(e.line, "custom_id" in e.message) for e in batch.errors] == [(2, True), (4, True)]
        assert batch.request_counts.total == 2 and batch.metadata["run"] == "grpc"
        lines = list(stub.StreamResults(jpb.StreamResultsRequest(batch_id=batch.id, follow=True), metadata=acme))
        assert sorted(line.custom_id for line in lines) == ["a", "b"]
        assert all(line.status == "completed" and json.loads(line.response_json)["object"] == "chat.completion"
                   for line in lines)
        done = stub.GetBatch(jpb.GetBatchRequest(batch_id=batch.id), metadata=acme)
        assert done.status == "completed" and done.request_counts.completed == 2 and done.completed_at > 0
        progress = stub.GetProgress(jpb.GetProgressRequest(batch_id=batch.id), metadata=acme)
        assert [(p.custom_id, p.phase) for p in progress.requests] == [("a", "done"), ("b", "done")]
        page = stub.ListBatches(jpb.ListBatchesRequest(limit=1), metadata=acme)
        assert [b.id for b in page.batches] == [batch.id] and page.has_more
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetBatch(jpb.GetBatchRequest(batch_id=batch.id), metadata=other)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetBatch(jpb.GetBatchRequest(batch_id=batch.id))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        channel.close()
        server.stop(grace=1).wait()


def test_the_command_line(setup, tmp_path):
    import subprocess
    import sys

    from realparts import ROOT, child_env

    jobs, _ = setup
    env = child_env(**jobs.settings)
    source = tmp_path / "batch.jsonl"
    source.write_text("\n".join([request_line("cli-1", 3), "not json", request_line("cli-2", 3)]) + "\n")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "services.jobs", "--tenant", "acme", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    submitted = cli("submit", str(source), "--watch")
    assert submitted.returncode == 0, submitted.stderr
    batch = json.loads(submitted.stdout)
    assert batch["errors"]["data"][0]["line"] == 2
    assert "2/2 ended (2 done, 0 failed)" in submitted.stderr and submitted.stderr.strip().endswith("completed")
    out = tmp_path / "results.jsonl"
    assert cli("results", batch["id"], "--out", str(out)).returncode == 0
    assert [json.loads(line)["custom_id"] for line in out.read_text().splitlines()] == ["cli-1", "cli-2"]
    missing = cli("status", "batch_missing")
    assert missing.returncode == 2 and "no batch batch_missing" in missing.stderr
