"""Real parts for integration tests: a fresh PostgreSQL database, a Redis database as the broker, a model worker
(`tiny`) and Celery worker processes, all on this machine."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PG = "postgresql+psycopg://postgres@127.0.0.1:5432"


def _available(probe) -> bool:
    try:
        probe()
        return True
    except Exception:  # noqa: BLE001 - any failure means the service is not there
        return False


@contextlib.contextmanager
def fresh_postgres(prefix: str = "test"):
    """The URL of a new PostgreSQL database, dropped afterwards; the test is skipped when there is no server."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    admin = sqlalchemy.create_engine(f"{PG}/test", isolation_level="AUTOCOMMIT")
    if not _available(lambda: admin.connect().close()):
        pytest.skip("no PostgreSQL at 127.0.0.1:5432")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield f"{PG}/{name}"
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        admin.dispose()


@pytest.fixture(scope="module")
def database_url():
    from services.jobs.db import upgrade

    with fresh_postgres("jobs") as url:
        upgrade(url)
        yield url


def require_redis(url: str):
    """A client of the Redis database at `url`; the test is skipped when there is none."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(url)
    if not _available(client.ping):
        pytest.skip(f"no Redis at {url}")
    return client


@contextlib.contextmanager
def redis_registry(url: str, prefix: str = "dsv4:registry"):
    """The worker registry on a real Redis, its keys cleared before and after."""
    from foundation.registry import RedisRegistry

    require_redis(url)
    registry = RedisRegistry(url, prefix=prefix)

    def clear() -> None:
        keys = list(registry.redis.scan_iter(f"{prefix}:*"))
        if keys:
            registry.redis.delete(*keys)

    clear()
    try:
        yield registry
    finally:
        clear()
        registry.close()


@pytest.fixture(scope="module")
def broker_url():
    url = "redis://127.0.0.1:6379/13"
    client = require_redis(url)
    client.flushdb()
    yield url
    client.flushdb()


def wait_for(predicate, timeout: float, what: str, every: float = 0.05):
    """The predicate's first truthy value within `timeout` seconds; TimeoutError saying `what` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(what)


class Process:
    """A child process whose output goes to a log file, stopped (and reaped) at the end."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.handle = open(log, "w")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self.handle, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log.read_text())
            if match:
                return match
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.proc.args[:4]} exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"no {pattern!r} in {self.log}: {self.log.read_text()[-2000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)  # a warm shutdown of an idle worker takes ~1 s
            except subprocess.TimeoutExpired:
                self.kill()
        self.handle.close()


def child_env(**settings: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    env.update({f"DSV4_JOBS_{k.upper()}": str(v) for k, v in settings.items()})
    return env


@pytest.fixture(scope="module")
def model_worker(tmp_path_factory):
    root = tmp_path_factory.mktemp("model-worker")
    worker = Process([sys.executable, "-m", "model_worker", "serve", "--config", "tiny", "--port", "0",
                      "--session-store", str(root / "sessions")], child_env(), root / "worker.log")
    port = worker.wait_for(r"serving \S+ on 127\.0\.0\.1:(\d+)").group(1)
    yield f"127.0.0.1:{port}", worker
    worker.stop()


def start_celery(root: Path, name: str, concurrency: int = 2, beat: bool = False, pool: str = "prefork",
                 **settings: str) -> Process:
    args = [sys.executable, "-m", "celery", "-A", "services.jobs.celery_app", "worker", "-Q", "think_max,default",
            "-c", str(concurrency), "-P", pool, "-n", f"{name}@%h", "-l", "info", "--without-gossip",
            "--without-mingle"]
    if beat:
        args += ["-B", "-s", str(root / f"{name}-beat")]
    process = Process(args, child_env(**settings), root / f"{name}.log")
    process.wait_for(r"ready\.")
    return process


def start_gateway(root: Path, worker: str, jobs: str | None, database_url: str, keys: dict | Path | None = None,
                  **settings: object) -> tuple[Process, str]:
    """`python -m services.gateway` in front of the model worker at `worker` (and the jobs service at `jobs`), its
    tables in `database_url`, the key table `keys` (a dict is written to root/keys.json), `settings` as its
    DSV4_GATEWAY_* variables; returns the process (the caller stops it) and its http://127.0.0.1:PORT."""
    env = child_env()
    env.update({"DSV4_GATEWAY_DATABASE_URL": database_url, "DSV4_GATEWAY_FILES_DIR": str(root / "files"),
                **{f"DSV4_GATEWAY_{name.upper()}": str(value) for name, value in settings.items()}})
    args = [sys.executable, "-m", "services.gateway", "--port", "0", "--worker", worker]
    if jobs:
        args += ["--jobs", jobs]
    if isinstance(keys, dict):
        (root / "keys.json").write_text(json.dumps(keys))
        keys = root / "keys.json"
    if keys is not None:
        args += ["--api-keys", str(keys)]
    process = Process(args, env, root / "gateway.log")
    try:
        return process, "http://127.0.0.1:" + process.wait_for(r"gateway on http://127\.0\.0\.1:(\d+)/v1").group(1)
    except BaseException:
        process.stop()
        raise


@contextlib.contextmanager
def tiny_worker_in_process(root: Path):
    """A real model worker (`tiny`, official numerics) on a port of the test process, sessions on disk at `root`."""
    from model_worker.engine.loading import load_model
    from model_worker.server.serve import serve_in_process
    from model_worker.sessions import open_blobs

    worker = serve_in_process(load_model(None, "tiny", numerics="official"), open_blobs(str(root)), token_budget=256)
    try:
        yield worker
    finally:
        worker.stop()


@contextlib.contextmanager
def jobs_service(root: Path, database_url: str, broker_url: str, worker_target: str, api_keys: dict | None = None,
                 worker_api_key: str | None = None):
    """The jobs service for real: its gRPC server in this process, a Celery worker process, PostgreSQL and Redis;
    yields the server's address. `api_keys`: its key table (as load_api_keys reads it); `worker_api_key`: the key
    its runners call the model worker with."""
    from foundation.auth import parse_api_keys
    from foundation.sql import make_engine, sessions
    from services.jobs import celery_app
    from services.jobs.job_store import JobStore
    from services.jobs.server import build_server
    from services.jobs.settings import JobsSettings
    from services.jobs.use_cases import Jobs

    settings = dict(database_url=database_url, broker_url=broker_url, worker_target=worker_target,
                    result_store=str(root / "results"), lease_seconds=5)
    if worker_api_key:
        settings["worker_api_key"] = worker_api_key
    celery_app.configure(JobsSettings(**settings))
    celery = start_celery(root, "jobs-service", **settings)
    engine = make_engine(database_url)
    jobs = Jobs(JobStore(sessions(engine)), celery_app.CeleryPublisher())
    server, port = build_server(jobs, "127.0.0.1", 0, parse_api_keys(api_keys or {}))
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=1).wait()
        celery.stop()
        engine.dispose()
