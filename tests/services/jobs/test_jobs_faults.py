"""Faults with real processes: the whole Celery worker killed mid-job (a short visibility timeout redelivers its
message, the reaper re-queues its lease) and the model worker restarted mid-job (the task retries with backoff).
Each request still ends exactly once: one result row, one usage row."""

from __future__ import annotations

import json
import socket
import sys
import time

import pytest
from realparts import Process, child_env, start_celery, wait_for
from sqlalchemy import func, select

from foundation.registry import LocalRegistry, WorkerPool
from services.jobs import celery_app
from services.jobs.db import make_engine, sessions
from services.jobs.job_store import JobStore
from services.jobs.settings import JobsSettings
from services.jobs.spec import parse_line
from services.jobs.tables import BatchRequest, Result, UsageLedger
from services.jobs.use_cases import Jobs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_model_worker(root, port: int) -> Process:
    worker = Process([sys.executable, "-m", "model_worker", "serve", "--config", "tiny", "--port", str(port),
                      "--session-store", str(root / "sessions")], child_env(), root / f"model-worker-{time.time()}.log")
    worker.wait_for(r"serving \S+ on")
    return worker


def line(custom_id: str, max_tokens: int) -> str:
    return json.dumps({"custom_id": custom_id, "body": {"messages": [{"role": "user", "content": "go"}],
                                                        "reasoning_effort": "none", "max_tokens": max_tokens,
                                                        "temperature": 1.0, "seed": 1}})


def once(jobs: Jobs, batch_id: str) -> tuple[int, int, int]:
    with jobs.store.sessions() as s:
        return (s.scalar(select(func.count()).select_from(Result).where(Result.batch_id == batch_id)),
                s.scalar(select(func.count()).select_from(UsageLedger).where(UsageLedger.batch_id == batch_id)),
                s.scalar(select(func.sum(BatchRequest.attempts)).where(BatchRequest.batch_id == batch_id)))


@pytest.fixture
def world(tmp_path, database_url, broker_url):
    port = free_port()
    model_worker = start_model_worker(tmp_path, port)
    # A visibility timeout of seconds (and jobs no longer than that) so a lost worker's message comes back soon.
    settings = dict(database_url=database_url, broker_url=broker_url, worker_target=f"127.0.0.1:{port}",
                    result_store=str(tmp_path / "results"), lease_seconds=3, requeue_after_seconds=2,
                    reap_every_seconds=1, longest_job_seconds=20, visibility_timeout_seconds=25,
                    progress_every_tokens=16)
    celery_app.configure(JobsSettings(**settings))
    jobs = Jobs(JobStore(sessions(make_engine(database_url))), celery_app.CeleryPublisher())
    state = {"model_worker": model_worker, "port": port, "settings": settings, "root": tmp_path}
    yield jobs, state
    state["model_worker"].stop()


def started(jobs: Jobs, batch_id: str) -> bool:
    return any(p["tokens"] for p in jobs.store.progress(batch_id))


def test_the_whole_celery_worker_killed_mid_job(world):
    jobs, state = world
    celery = start_celery(state["root"], "doomed", beat=True, **state["settings"])
    batch = jobs.submit_jsonl("acme", line("victim", 150))
    wait_for(lambda: started(jobs, batch["id"]), 60, "the request did not start")
    celery.kill()  # the main process, its pool and its beat, at once
    celery.stop()
    survivor = start_celery(state["root"], "survivor", beat=True, **state["settings"])
    try:
        view = wait_for(lambda: (v := jobs.get("acme", batch["id"]))["status"] == "completed" and v, 120,
                        "the batch did not complete after the worker came back")
        assert view["request_counts"]["completed"] == 1
        results, usage, attempts = once(jobs, batch["id"])
        assert results == usage == 1 and attempts >= 2
    finally:
        survivor.stop()


def test_the_model_worker_restarted_mid_job(world):
    jobs, state = world
    celery = start_celery(state["root"], "steady", beat=True, **state["settings"])
    try:
        batch = jobs.submit_jsonl("acme", line("interrupted", 150))
        wait_for(lambda: started(jobs, batch["id"]), 60, "the request did not start")
        state["model_worker"].kill()
        state["model_worker"].stop()
        time.sleep(1.0)  # the task sees UNAVAILABLE and retries with backoff meanwhile
        state["model_worker"] = start_model_worker(state["root"], state["port"])
        wait_for(lambda: jobs.get("acme", batch["id"])["status"] == "completed", 120,
                 "the batch did not complete after the model worker came back")
        results, usage, attempts = once(jobs, batch["id"])
        assert results == usage == 1 and attempts >= 2
    finally:
        celery.stop()


def test_a_private_redis_restarted_while_jobs_are_queued_and_running(world, tmp_path):
    jobs, state = world
    port = free_port()
    redis_args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--appendonly", "yes",
                  "--appendfsync", "always", "--dir", str(tmp_path), "--save", ""]
    redis = Process(redis_args, child_env(), tmp_path / "redis-1.log")
    redis.wait_for("Ready to accept connections")
    settings = {**state["settings"], "broker_url": f"redis://127.0.0.1:{port}/0"}
    celery_app.configure(JobsSettings(**settings))
    celery = start_celery(state["root"], "broker-test", beat=True, **settings)
    try:
        batch = jobs.submit_jsonl("acme", "\n".join(line(f"r{i}", 60) for i in range(6)))
        wait_for(lambda: started(jobs, batch["id"]), 60, "nothing started")
        redis.kill()  # mid-run, with messages still queued
        redis.stop()
        redis = Process(redis_args, child_env(), tmp_path / "redis-2.log")
        redis.wait_for("Ready to accept connections")
        wait_for(lambda: jobs.get("acme", batch["id"])["status"] == "completed", 150,
                 "the batch did not complete after Redis came back")
        results, usage, _ = once(jobs, batch["id"])
        assert results == usage == 6
        assert jobs.get("acme", batch["id"])["request_counts"] == {"total": 6, "completed": 6, "failed": 0}
    finally:
        celery.stop()
        redis.stop()


def test_jobs_on_sessions_never_change_them_and_resume_without_re_prefill(world):
    from foundation.clients.worker import Message, Sampling, WorkerClient

    jobs, state = world
    client = WorkerClient(f"127.0.0.1:{state['port']}", timeout=60)
    plain = client.create_session(session_id="agent", system_prompt="be brief")
    client.generate_text(session_id="agent", messages=[Message("user", "hello")],
                         sampling=Sampling(temperature=0.0, max_tokens=3))
    deep = client.create_session(session_id="agent-max", system_prompt="be brief", think_max=True)
    before = {s: client.get_session(s).commit for s in ("agent", "agent-max")}
    celery = start_celery(state["root"], "sessions", beat=True, **state["settings"])
    try:
        lines = [json.dumps({"custom_id": custom_id, "body": {
            "messages": [{"role": "user", "content": "go on"}], "session_id": session, "max_tokens": 120,
            "temperature": 1.0, "seed": 2}}) for custom_id, session in (("copy", "agent"), ("fork", "agent-max"))]
        # The sessions are the default tenant's (the worker has no key table): a batch reaches its own tenant's only.
        batch = jobs.submit_jsonl("default", "\n".join(lines))
        wait_for(lambda: started(jobs, batch["id"]), 60, "nothing started")
        state["model_worker"].kill()  # mid-job: the retries resume the sessions from the store
        state["model_worker"].stop()
        state["model_worker"] = start_model_worker(state["root"], state["port"])
        wait_for(lambda: jobs.get("default", batch["id"])["status"] == "completed", 120, "the batch did not complete")
        results = {r["custom_id"]: r["response"]["body"] for r in jobs.results("default", batch["id"])}
        session_length = client.get_session("agent").tokens
        # The Think Max copy of a plain session is prefilled (reported); the fork of a Think Max one is not.
        assert results["copy"]["usage"]["prompt_tokens_details"]["cached_tokens"] >= session_length
        assert results["fork"]["usage"]["prompt_tokens_details"]["cached_tokens"] >= deep.tokens
        with jobs.store.sessions() as s:
            from services.jobs.tables import UsageLedger

            prefilled = dict(s.execute(select(UsageLedger.custom_id, UsageLedger.prefilled_tokens)
                                       .where(UsageLedger.batch_id == batch["id"])).all())
        assert prefilled["copy"] > session_length > prefilled["fork"]
        assert client.get_session(results["copy"]["session_id"]).think_max
        assert {s: client.get_session(s).commit for s in ("agent", "agent-max")} == before  # never changed
        assert plain.session_id == "agent"
    finally:
        celery.stop()
        client.close()


def test_a_killed_model_worker_hands_its_job_to_another(world):
    jobs, state = world
    other_port = free_port()
    other = start_model_worker(state["root"], other_port)
    addresses = sorted([f"127.0.0.1:{state['port']}", f"127.0.0.1:{other_port}"])
    settings = {**state["settings"], "worker_target": ",".join(addresses)}
    celery = start_celery(state["root"], "routed", beat=True, **settings)
    workers = {f"127.0.0.1:{state['port']}": state["model_worker"], f"127.0.0.1:{other_port}": other}
    try:
        batch = jobs.submit_jsonl("acme", line("moved", 150))
        wait_for(lambda: started(jobs, batch["id"]), 60, "the request did not start")
        # Equal loads: the runner's pool picks the worker the line's opening prefers (prefix cache affinity).
        affinity = parse_line(line("moved", 150), 1).affinity
        first = workers[WorkerPool(LocalRegistry(addresses), str).route(affinity=affinity)]
        first.kill()
        first.stop()
        wait_for(lambda: jobs.get("acme", batch["id"])["status"] == "completed", 120,
                 "the batch did not complete on the other model worker")
        results, usage, attempts = once(jobs, batch["id"])
        assert results == usage == 1 and attempts >= 2
    finally:
        celery.stop()
        for process in workers.values():
            process.stop()
