"""The gateway for real: `python -m services.gateway` as a process, in front of a real model worker process (`tiny`),
the real jobs service (its gRPC server, a Celery worker process, Redis, PostgreSQL). Clients are the official
`openai` SDK and an agent framework, unchanged."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from realparts import Process, broker_url, child_env, database_url, jobs_service, model_worker  # noqa: F401

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
    (root / "keys.json").write_text(json.dumps(KEYS))
    env = child_env()
    env.update({"DSV4_GATEWAY_DATABASE_URL": database_url, "DSV4_GATEWAY_FILES_DIR": str(root / "files"),
                "DSV4_GATEWAY_BACKGROUND_POLL_SECONDS": "0.2"})
    with jobs_service(root, database_url, broker_url, target) as jobs:
        process = Process([sys.executable, "-m", "services.gateway", "--port", "0", "--worker", target,
                           "--jobs", jobs, "--api-keys", str(root / "keys.json")], env, root / "gateway.log")
        try:
            port = process.wait_for(r"gateway on http://127\.0\.0\.1:(\d+)/v1").group(1)
            yield LiveGateway(f"http://127.0.0.1:{port}/v1", target, process, root)
        finally:
            process.stop()
