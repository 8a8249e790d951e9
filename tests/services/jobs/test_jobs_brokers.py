"""The same small batch through the other brokers: RabbitMQ (running here) and the embedded one (kombu's SQLAlchemy
transport on SQLite, what the README's run command uses: no server at all). Where a broker lacks priorities or
redelivery, the lease and the reaper keep the outcome exact."""

from __future__ import annotations

import json
import socket

import pytest
from realparts import start_celery, wait_for

from services.jobs import celery_app
from services.jobs.db import make_engine, sessions
from services.jobs.job_store import JobStore
from services.jobs.settings import JobsSettings
from services.jobs.use_cases import Jobs


def rabbitmq() -> str:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
    except OSError:
        pytest.skip("no RabbitMQ at 127.0.0.1:5672")
    return "amqp://guest:guest@127.0.0.1:5672//"


@pytest.mark.parametrize("broker", ["rabbitmq", "embedded"])
def test_a_batch_through_another_broker(broker, tmp_path, database_url, model_worker):
    target, _ = model_worker
    broker_url = rabbitmq() if broker == "rabbitmq" else f"sqla+sqlite:///{tmp_path}/broker.db"
    settings = dict(database_url=database_url, broker_url=broker_url, worker_target=target,
                    result_store=str(tmp_path / "results"))
    celery_app.configure(JobsSettings(**settings))
    celery = start_celery(tmp_path, f"via-{broker}", **settings)
    try:
        jobs = Jobs(JobStore(sessions(make_engine(database_url))), celery_app.CeleryPublisher())
        lines = [json.dumps({"custom_id": f"{broker}-{i}", "body": {
            "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "max" if i else "none",
            "max_tokens": 3, "temperature": 0}}) for i in range(3)]
        batch = jobs.submit_jsonl("acme", "\n".join(lines))
        view = wait_for(lambda: (v := jobs.get("acme", batch["id"]))["status"] == "completed" and v, 90,
                        f"the batch did not complete through {broker}")
        assert view["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    finally:
        celery.stop()


def test_an_interactive_job_goes_before_queued_batch_work(tmp_path, database_url, model_worker):
    redis = pytest.importorskip("redis")
    broker_url = "redis://127.0.0.1:6379/11"
    redis.Redis.from_url(broker_url).flushdb()
    target, _ = model_worker
    settings = dict(database_url=database_url, broker_url=broker_url, worker_target=target,
                    result_store=str(tmp_path / "results"))
    celery_app.configure(JobsSettings(**settings))
    jobs = Jobs(JobStore(sessions(make_engine(database_url))), celery_app.CeleryPublisher())

    def batch(prefix: str, n: int, interactive: bool) -> str:
        lines = [json.dumps({"custom_id": f"{prefix}{i}", "body": {"messages": [{"role": "user", "content": "x"}],
                                                                   "max_tokens": 2}}) for i in range(n)]
        return jobs.submit_jsonl("acme", "\n".join(lines), interactive=interactive)["id"]

    queued_first = batch("batch", 4, interactive=False)  # all waiting before any worker runs
    agent_turn = batch("turn", 1, interactive=True)
    celery = start_celery(tmp_path, "one-at-a-time", concurrency=1, **settings)
    try:
        for batch_id in (queued_first, agent_turn):
            wait_for(lambda b=batch_id: jobs.get("acme", b)["status"] == "completed", 90, "not completed")
        from sqlalchemy import select

        from services.jobs.tables import BatchRequest

        with jobs.store.sessions() as s:
            order = list(s.scalars(select(BatchRequest.custom_id).where(
                BatchRequest.batch_id.in_([queued_first, agent_turn])).order_by(BatchRequest.started_at)))
        assert order[0] == "turn0", order
    finally:
        celery.stop()
        redis.Redis.from_url(broker_url).flushdb()
