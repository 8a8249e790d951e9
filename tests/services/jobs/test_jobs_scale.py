"""A 1,000-request batch (a few tokens each) through one Celery worker (16 threads) and one model worker: every
request completes once, the counts add up, and the API keeps answering while it runs (counted, not timed)."""

from __future__ import annotations

import json
import threading

import pytest
from realparts import start_celery, wait_for
from sqlalchemy import func, select

from services.jobs import celery_app
from services.jobs.db import make_engine, sessions
from services.jobs.job_store import JobStore
from services.jobs.settings import JobsSettings
from services.jobs.tables import UsageLedger
from services.jobs.use_cases import Jobs

REQUESTS = 1000


@pytest.mark.slow
def test_a_thousand_requests(tmp_path, database_url, broker_url, model_worker):
    target, _ = model_worker
    settings = dict(database_url=database_url, broker_url=broker_url, worker_target=target,
                    result_store=str(tmp_path / "results"), lease_seconds=30, requeue_after_seconds=120)
    celery_app.configure(JobsSettings(**settings))
    celery = start_celery(tmp_path, "many", concurrency=16, pool="threads", **settings)
    jobs = Jobs(JobStore(sessions(make_engine(database_url))), celery_app.CeleryPublisher())
    lines = [json.dumps({"custom_id": f"q{i}", "body": {"messages": [{"role": "user", "content": f"n{i}"}],
                                                       "reasoning_effort": "none", "max_tokens": 1 + i % 4,
                                                       "temperature": 0}}) for i in range(REQUESTS)]
    answers, seen_ended, done = [], [], threading.Event()

    def poll() -> None:  # a client reading the batch throughout
        while not done.is_set():
            view = jobs.get("acme", batch["id"])
            answers.append(view["status"])
            seen_ended.append(view["request_counts"]["completed"])

    try:
        batch = jobs.submit_jsonl("acme", "\n".join(lines))
        poller = threading.Thread(target=poll)
        poller.start()
        view = wait_for(lambda: (v := jobs.get("acme", batch["id"]))["status"] == "completed" and v, 600,
                        "the batch did not complete")
        done.set()
        poller.join()
        assert view["request_counts"] == {"total": REQUESTS, "completed": REQUESTS, "failed": 0}
        with jobs.store.sessions() as s:
            assert s.scalar(select(func.count()).select_from(UsageLedger)
                            .where(UsageLedger.batch_id == batch["id"])) == REQUESTS
            assert s.scalar(select(func.sum(UsageLedger.completion_tokens))
                            .where(UsageLedger.batch_id == batch["id"])) <= sum(1 + i % 4 for i in range(REQUESTS))
        # The API answered while requests were in flight, and progress only went forward.
        in_flight = [n for n in seen_ended if 0 < n < REQUESTS]
        assert len(in_flight) >= 10 and seen_ended == sorted(seen_ended)
    finally:
        done.set()
        celery.stop()
