"""A job's span joins the submitter's trace: the trace context travels in the Celery task headers through a real
broker (Redis) to a worker consuming in this process, so its spans can be read here."""

from __future__ import annotations

import json

import pytest
from celery.contrib.testing.worker import start_worker
from opentelemetry import trace
from realparts import wait_for

from services.jobs import celery_app
from services.jobs.db import make_engine, sessions
from services.jobs.job_store import JobStore
from services.jobs.settings import JobsSettings
from services.jobs.use_cases import Jobs


@pytest.fixture
def private_broker():
    redis = pytest.importorskip("redis")
    url = "redis://127.0.0.1:6379/12"
    redis.Redis.from_url(url).flushdb()
    yield url
    redis.Redis.from_url(url).flushdb()


def test_a_jobs_span_is_a_child_of_the_submitters(tmp_path, database_url, private_broker, model_worker, spans):
    target, _ = model_worker
    celery_app.configure(JobsSettings(database_url=database_url, broker_url=private_broker, worker_target=target,
                                      result_store=str(tmp_path / "results")))
    jobs = Jobs(JobStore(sessions(make_engine(database_url))), celery_app.CeleryPublisher())
    line = json.dumps({"custom_id": "traced", "body": {"messages": [{"role": "user", "content": "hi"}],
                                                      "reasoning_effort": "none", "max_tokens": 2}})
    with start_worker(celery_app.app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        with trace.get_tracer("test").start_as_current_span("submitter") as submitter:
            batch = jobs.submit_jsonl("acme", line)
        wait_for(lambda: jobs.get("acme", batch["id"])["status"] == "completed", 60, "the job did not run")
    job_spans = [s for s in spans.get_finished_spans() if s.name == "jobs.run_request"]
    assert len(job_spans) == 1
    assert job_spans[0].context.trace_id == submitter.get_span_context().trace_id
    assert job_spans[0].parent is not None
