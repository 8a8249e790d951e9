"""What a Celery worker's metrics endpoint serves: with PROMETHEUS_MULTIPROC_DIR, the requests a forked pool child
ran (summed from the directory in the parent, where the endpoint lives); without it, this process's own counts, and a
prefork pool is refused rather than served with its children's counts missing. The multiprocess case runs in a fresh
interpreter: prometheus_client reads the variable when it is first imported."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from services.jobs.job_store import Outcome
from services.jobs.metrics import MULTIPROC_ENV, RunMetrics, worker_registry

ROOT = Path(__file__).resolve().parents[3]

FORKED_CHILD_RUNS_A_REQUEST = textwrap.dedent("""
    import os
    from prometheus_client import generate_latest
    from services.jobs.metrics import RunMetrics, worker_registry
    from services.jobs.job_store import Outcome

    metrics = RunMetrics()  # made before the fork, as the Celery app makes it at import
    pid = os.fork()
    if pid == 0:  # a pool child runs a request
        metrics.ended(Outcome("completed", usage={"completion_tokens": 7}), 2.5)
        os._exit(0)
    os.waitpid(pid, 0)
    print(generate_latest(worker_registry(metrics, forks=True)).decode())
""")


def test_a_forked_childs_requests_reach_the_parents_endpoint(tmp_path):
    env = {**os.environ, MULTIPROC_ENV: str(tmp_path), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", FORKED_CHILD_RUNS_A_REQUEST], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    assert 'dsv4_jobs_requests_total{status="completed"} 1.0' in out
    assert 'dsv4_jobs_tokens_total{kind="completion"} 7.0' in out
    assert "dsv4_jobs_request_run_seconds_count 1.0" in out


def test_without_the_directory_a_worker_serves_its_own_counts_and_refuses_prefork(monkeypatch):
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    metrics = RunMetrics()
    metrics.ended(Outcome("failed", usage=None), 0.1)
    served = generate_latest(worker_registry(metrics, forks=False)).decode()
    assert 'dsv4_jobs_requests_total{status="failed"} 1.0' in served
    with pytest.raises(RuntimeError, match=MULTIPROC_ENV):
        worker_registry(metrics, forks=True)
