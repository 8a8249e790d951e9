"""The platform in this test process, for its telemetry: a real tiny model worker, the jobs service (its gRPC server
on SQLite, Celery on the embedded SQLite broker with a worker consuming on a thread, so trace context really crosses
the message headers), the agent service and the gateway (uvicorn on a thread). Spans go to the suite's in-memory
exporter (tests/conftest.py); each service's metrics endpoint is served as its `serve` serves it."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import start_http_server
from realparts import tiny_worker_in_process, wait_for


@dataclass
class Platform:
    worker: str  # gRPC addresses
    jobs: str
    agent: str
    gateway: str  # http://HOST:PORT
    model: str
    metrics: dict[str, str]  # service -> its metrics URL


def serve_metrics(stack: contextlib.ExitStack, registry) -> str:
    server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    stack.callback(server.server_close)
    stack.callback(server.shutdown)
    return f"http://127.0.0.1:{server.server_port}/metrics"


@contextlib.contextmanager
def jobs_in_process(root: Path, worker: str) -> Iterator[tuple[str, str, str]]:
    """The jobs gRPC service and a Celery worker (solo pool, on a thread); yields their address, the service's
    metrics URL and the Celery worker's (served by the worker itself, from `metrics_port`)."""
    from celery.contrib.testing.worker import start_worker

    from model_worker.sessions import open_blobs
    from services.jobs import celery_app
    from services.jobs.db import make_engine, sessions, upgrade
    from services.jobs.job_store import JobStore
    from services.jobs.server import build_server
    from services.jobs.settings import JobsSettings
    from services.jobs.use_cases import Jobs

    settings = JobsSettings(database_url=f"sqlite:///{root}/jobs.db", broker_url=f"sqla+sqlite:///{root}/broker.db",
                            worker_target=worker, result_store=str(root / "results"), host="127.0.0.1",
                            metrics_port=0)
    upgrade(settings.database_url)
    celery_app.configure(settings)
    engine = make_engine(settings.database_url)
    jobs = Jobs(JobStore(sessions(engine)), celery_app.CeleryPublisher(), open_blobs(settings.result_store))
    server, port = build_server(jobs, "127.0.0.1", 0)
    server.start()
    with contextlib.ExitStack() as stack:
        stack.callback(engine.dispose)
        stack.callback(lambda: server.stop(grace=1).wait())
        service_metrics = serve_metrics(stack, jobs.metrics.registry)
        stack.enter_context(start_worker(celery_app.app, pool="solo", perform_ping_check=False, shutdown_timeout=10))
        celery_metrics = f"http://127.0.0.1:{celery_app.metrics_endpoint.server_port}/metrics"
        yield f"127.0.0.1:{port}", service_metrics, celery_metrics
    celery_app.configure(JobsSettings())


@contextlib.contextmanager
def agent_in_process(root: Path, worker: str, jobs: str) -> Iterator[tuple[str, object]]:
    from agent_runtime.service.serve import Runtime, build_server
    from agent_runtime.settings import AgentSettings

    runtime = Runtime(AgentSettings(database_url=f"sqlite:///{root}/agent.db", workers=worker, jobs_target=jobs,
                                    tool_plugins="services.embedded.tools:register"))
    server, port, _ = build_server(runtime, "127.0.0.1", 0, threads=8)
    server.start()
    try:
        yield f"127.0.0.1:{port}", runtime
    finally:
        runtime.runner.stop(grace_s=5)
        server.stop(grace=1).wait()
        runtime.close()


@contextlib.contextmanager
def gateway_in_process(root: Path, worker: str, jobs: str) -> Iterator[str]:
    import uvicorn

    from services.gateway.app import build, create_app
    from services.gateway.settings import GatewaySettings

    settings = GatewaySettings(workers=worker, jobs_target=jobs, database_url=f"sqlite:///{root}/gateway.db",
                               files_dir=str(root / "gateway-files"))
    server = uvicorn.Server(uvicorn.Config(create_app(build(settings)), log_level="warning"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "the gateway did not start")
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="package")
def platform(tmp_path_factory, _span_exporter) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("platform")
    with contextlib.ExitStack() as stack:
        worker = stack.enter_context(tiny_worker_in_process(root / "sessions"))
        metrics = {"worker": serve_metrics(stack, worker.runtime.metrics.registry)}
        jobs, metrics["jobs"], metrics["celery"] = stack.enter_context(jobs_in_process(root, worker.address))
        agent, runtime = stack.enter_context(agent_in_process(root, worker.address, jobs))
        metrics["agent"] = serve_metrics(stack, runtime.metrics.registry)
        gateway = stack.enter_context(gateway_in_process(root, worker.address, jobs))
        yield Platform(worker.address, jobs, agent, gateway, worker.runtime.model_name, metrics)
