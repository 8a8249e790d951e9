"""The same small batch through the other brokers: RabbitMQ (running here) and the embedded one (kombu's SQLAlchemy
transport on SQLite, what the README's run command uses: no server at all). Where a broker lacks priorities or
redelivery, the lease and the reaper keep the outcome exact."""

from __future__ import annotations

import json
import socket

import pytest
from conftest import start_celery
from test_jobs_faults import wait_for

from services.jobs import celery_app
from services.jobs.api import Jobs
from services.jobs.db import make_engine, sessions
from services.jobs.service import JobStore
from services.jobs.settings import JobsSettings


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
        jobs = Jobs(JobStore(sessions(make_engine(database_url))))
        lines = [json.dumps({"custom_id": f"{broker}-{i}", "body": {
            "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "max" if i else "none",
            "max_tokens": 3, "temperature": 0}}) for i in range(3)]
        batch = jobs.submit_jsonl("acme", "\n".join(lines))
        view = wait_for(lambda: (v := jobs.get("acme", batch["id"]))["status"] == "completed" and v, 90,
                        f"the batch did not complete through {broker}")
        assert view["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    finally:
        celery.stop()
