"""Jobs service benchmark on real parts: a model worker process (`tiny`), a Celery worker process (threads), Redis as
the broker (database 14 of the local server) and a fresh PostgreSQL database.

- Queue overhead per job: a one-token job from submit to its result, against the same generation called on the model
  worker directly (medians of `--jobs` runs, one at a time, alternated).
- Throughput: a batch of `--batch` requests (1-4 new tokens each), requests/s and output tokens/s end to end.

    python -m bench.jobs [--jobs 20] [--batch 1000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
from sqlalchemy import create_engine

from foundation.clients.worker import Message, Sampling, WorkerClient
from services.jobs import celery_app
from services.jobs.db import make_engine, sessions, upgrade
from services.jobs.job_store import JobStore
from services.jobs.settings import JobsSettings
from services.jobs.use_cases import Jobs

PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
ROOT = Path(__file__).parents[1]


def start(args: list[str], log: Path, env: dict[str, str], ready: str) -> tuple[subprocess.Popen, re.Match]:
    handle = open(log, "w")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    while True:
        match = re.search(ready, log.read_text())
        if match:
            return proc, match
        if proc.poll() is not None:
            raise RuntimeError(log.read_text()[-2000:])
        time.sleep(0.1)


def wait_done(jobs: Jobs, batch_id: str) -> dict:
    while (view := jobs.get("bench", batch_id))["status"] not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(0.01)
    return view


def line(custom_id: str, max_tokens: int) -> str:
    return json.dumps({"custom_id": custom_id, "body": {"messages": [{"role": "user", "content": custom_id}],
                                                       "reasoning_effort": "none", "max_tokens": max_tokens,
                                                       "temperature": 0}})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    name = f"jobs_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{PG}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    database_url, broker_url = f"{PG}/{name}", "redis://127.0.0.1:6379/14"
    redis.Redis.from_url(broker_url).flushdb()
    upgrade(database_url)
    procs = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            worker, match = start([sys.executable, "-m", "model_worker", "serve", "--config", "tiny", "--port", "0",
                                   "--session-store", str(root / "sessions")], root / "worker.log", env,
                                  r"on 127\.0\.0\.1:(\d+)")
            procs.append(worker)
            target = f"127.0.0.1:{match.group(1)}"
            settings = JobsSettings(database_url=database_url, broker_url=broker_url, worker_target=target,
                                    result_store=str(root / "results"))
            celery_env = {**env, **{f"DSV4_JOBS_{k.upper()}": str(v) for k, v in settings.model_dump().items()
                                    if v is not None}}
            celery, _ = start([sys.executable, "-m", "celery", "-A", "services.jobs.celery_app", "worker", "-Q",
                               "think_max,default", "-P", "threads", "-c", str(args.concurrency), "-l", "warning",
                               "--without-gossip", "--without-mingle"], root / "celery.log", celery_env,
                              r"ready\.|\[tasks\]|celery@")
            procs.append(celery)
            time.sleep(3)  # the consumer connects after the banner
            celery_app.configure(settings)
            jobs = Jobs(JobStore(sessions(make_engine(database_url))), celery_app.CeleryPublisher())
            client = WorkerClient(target, timeout=60)
            queued, direct = [], []
            for i in range(args.jobs):
                start_t = time.perf_counter()
                client.generate_text(messages=[Message("user", f"d{i}")], mode="non-think",
                                     sampling=Sampling(temperature=0.0, max_tokens=1))
                direct.append(time.perf_counter() - start_t)
                start_t = time.perf_counter()
                wait_done(jobs, jobs.submit_jsonl("bench", line(f"j{i}", 1))["id"])
                queued.append(time.perf_counter() - start_t)
            q, d = statistics.median(queued), statistics.median(direct)
            print("| one-token job | median ms | p90 ms |")
            print("|---|---|---|")
            p90 = sorted(direct)[int(0.9 * len(direct))]
            print(f"| direct to the model worker | {d * 1e3:.1f} | {p90 * 1e3:.1f} |")
            print(f"| through the queue (submit to result) | {q * 1e3:.1f} | "
                  f"{sorted(queued)[int(0.9 * len(queued))] * 1e3:.1f} |")
            print(f"\nqueue overhead per job: {(q - d) * 1e3:.1f} ms (median)\n")
            text = "\n".join(line(f"b{i}", 1 + i % 4) for i in range(args.batch))
            start_t = time.perf_counter()
            batch = jobs.submit_jsonl("bench", text)
            submitted = time.perf_counter() - start_t
            view = wait_done(jobs, batch["id"])
            elapsed = time.perf_counter() - start_t
            tokens = sum(1 + i % 4 for i in range(args.batch))
            print("| batch | submit s | end to end s | requests/s | output tokens/s | completed |")
            print("|---|---|---|---|---|---|")
            print(f"| {args.batch} requests | {submitted:.2f} | {elapsed:.1f} | {args.batch / elapsed:.1f} | "
                  f"{tokens / elapsed:.1f} | {view['request_counts']['completed']} |")
    finally:
        for proc in procs:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=30)
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
