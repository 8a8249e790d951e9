"""The jobs gRPC service as a process (`python -m services.jobs serve`). It serves from the start whatever is up:
ready once its database answers (migrated then) and its broker does (foundation/readiness.py), NOT_SERVING
and refusing calls UNAVAILABLE until then; TLS from its settings; SIGTERM drains it. Celery workers and model workers
are not among its dependencies: a batch it accepts waits in the broker for them."""

from __future__ import annotations

from sqlalchemy import text

from foundation.auth import load_api_keys
from foundation.metrics import serve_metrics
from foundation.readiness import Dependency, Readiness
from foundation.serving import tls_files
from foundation.tracing import configure_tracing
from services.jobs import celery_app
from services.jobs.db import upgrade
from services.jobs.server import build_server
from services.jobs.settings import JobsSettings
from services.jobs.use_cases import Jobs


def dependencies(settings: JobsSettings, jobs: Jobs) -> list[Dependency]:
    def database() -> None:
        with jobs.store.sessions() as session:
            session.execute(text("SELECT 1"))

    def broker() -> None:
        with celery_app.app.connection_for_write(celery_app.settings.broker_url) as connection:
            connection.ensure_connection(max_retries=0)  # one attempt: the readiness backoff is the retry

    return [Dependency("database", database, prepare=lambda: upgrade(settings.database_url)),
            Dependency("broker", broker)]


def run_service(jobs: Jobs, settings: JobsSettings) -> int:
    configure_tracing("dsv4-jobs")
    celery_app.configure(settings)  # batches are published to the broker these settings name, flags included
    readiness = Readiness("jobs service", dependencies(settings, jobs),
                          retry_max_s=settings.dependency_retry_max_seconds,
                          check_every_s=settings.dependency_check_seconds)
    tls = tls_files(settings)
    server, port = build_server(jobs, settings.host, settings.port, load_api_keys(settings.api_keys_file), tls=tls,
                                readiness=readiness)
    server.start()
    if settings.metrics_port is not None:
        serve_metrics(jobs.metrics.registry, settings.metrics_port, settings.host, "jobs")
    readiness.start()  # its first round before the line below: with everything up, the line means ready
    security = "" if tls is None else " (mutual TLS)" if tls.client_ca else " (TLS)"
    print(f"jobs service on {settings.host}:{port}{security}", flush=True)
    readiness.until_signalled()
    server.stop(grace=10).wait()
    return 0
