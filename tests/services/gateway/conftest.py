"""The gateway for real: `python -m services.gateway` as a process, in front of a real model worker process (`tiny`),
the real jobs service (its gRPC server, a Celery worker process, Redis, PostgreSQL). Clients are the official
`openai` SDK and an agent framework, unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from realparts import Process, broker_url, database_url, jobs_service, model_worker, start_gateway  # noqa: F401

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
    root = tmp_path_factory.mktemp("gateway")
    target, _ = model_worker
    with jobs_service(root, database_url, broker_url, target) as jobs:
        process, url = start_gateway(root, target, jobs, database_url, KEYS, background_poll_seconds=0.2,
                                     mode_policy="default")
        try:
            yield LiveGateway(f"{url}/v1", target, process, root)
        finally:
            process.stop()
