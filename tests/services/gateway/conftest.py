"""The gateway for real: `python -m services.gateway` as a process, in front of a real model worker process (`tiny`),
the real jobs service (its gRPC server, a Celery worker process, Redis, PostgreSQL). Clients are the official
`openai` SDK and an agent framework, unchanged."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from realparts import Process, broker_url, child_env, database_url, model_worker, start_celery  # noqa: F401

KEYS = {"key-acme": "acme", "key-other": "other"}


@dataclass
class LiveGateway:
    base_url: str
    worker: str
    process: Process
    root: Path

    def client(self, key: str = "key-acme", **options):
        from openai import OpenAI

        return OpenAI(base_url=self.base_url, api_key=key, max_retries=0, timeout=120, **options)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, database_url, broker_url, model_worker):  # noqa: F811 - fixtures
    from services.jobs import celery_app
    from services.jobs.api import Jobs
    from services.jobs.server import build_server
    from services.jobs.service import JobStore
    from services.jobs.settings import JobsSettings
    from services.sql import make_engine, sessions

    root = tmp_path_factory.mktemp("gateway")
    target, _ = model_worker
    settings = dict(database_url=database_url, broker_url=broker_url, worker_target=target,
                    result_store=str(root / "results"), lease_seconds=5)
    celery_app.configure(JobsSettings(**settings))
    celery = start_celery(root, "gateway-jobs", **settings)
    engine = make_engine(database_url)
    jobs_server, jobs_port = build_server(Jobs(JobStore(sessions(engine))), "127.0.0.1", 0)
    jobs_server.start()
    (root / "keys.json").write_text(json.dumps(KEYS))
    env = child_env()
    env.update({"DSV4_GATEWAY_DATABASE_URL": database_url, "DSV4_GATEWAY_FILES_DIR": str(root / "files"),
                "DSV4_GATEWAY_BACKGROUND_POLL_SECONDS": "0.2"})
    process = Process([sys.executable, "-m", "services.gateway", "--port", "0", "--worker", target,
                       "--jobs", f"127.0.0.1:{jobs_port}", "--api-keys", str(root / "keys.json")],
                      env, root / "gateway.log")
    port = process.wait_for(r"gateway on http://127\.0\.0\.1:(\d+)/v1").group(1)
    try:
        yield LiveGateway(f"http://127.0.0.1:{port}/v1", target, process, root)
    finally:
        process.stop()
        jobs_server.stop(grace=1).wait()
        celery.stop()
        engine.dispose()
