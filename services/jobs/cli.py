"""`python -m services.jobs`: submit a JSONL batch (and watch it), read its status, fetch its results, cancel it;
show or rotate a tenant's webhook signing secret. Settings come from the environment (`DSV4_JOBS_*`, see
settings.py)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from foundation.blobs import open_blobs
from foundation.settings import add_settings_cli, settings_from
from foundation.webhooks.secrets import show_secret
from services.jobs.celery_app import CeleryPublisher
from services.jobs.db import make_engine, sessions, upgrade
from services.jobs.job_store import BatchNotFound, JobStore
from services.jobs.settings import JobsSettings
from services.jobs.use_cases import Jobs
from services.jobs.webhook_store import WebhookStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.jobs", description=__doc__)
    parser.add_argument("--tenant", default="default")
    commands = parser.add_subparsers(dest="command", required=True)
    submit = commands.add_parser("submit", help="submit a JSONL batch (OpenAI batch input lines)")
    submit.add_argument("file")
    submit.add_argument("--window", type=int, help="completion window in seconds (default: the setting)")
    submit.add_argument("--watch", action="store_true", help="show progress until the batch ends")
    for name, text in (("status", "the batch as OpenAI's Batch object"), ("cancel", "cancel the batch"),
                       ("watch", "show progress until the batch ends")):
        commands.add_parser(name, help=text).add_argument("batch_id")
    serve = commands.add_parser("serve", help="the jobs gRPC service (protos/dsv4/jobs/v1/jobs.proto)")
    add_settings_cli(serve, JobsSettings)
    secret = commands.add_parser("webhook-secret", help="the tenant's webhook signing secret (made if it has "
                                 "none), as JSON; --rotate replaces it, the old one signing too for "
                                 "webhook_secret_grace_seconds")
    secret.add_argument("--rotate", action="store_true")
    results = commands.add_parser("results", help="the batch's results as JSONL")
    results.add_argument("batch_id")
    results.add_argument("--out", help="file to write (default: standard output)")
    args = parser.parse_args(argv)

    settings = settings_from(JobsSettings, args)
    if args.command != "serve":  # serve migrates once the database answers: it may start before its database
        upgrade(settings.database_url)
    store = JobStore(sessions(make_engine(settings.database_url)), settings.max_attempts,
                     settings.webhook_destinations())
    jobs = Jobs(store, CeleryPublisher(), open_blobs(settings.result_store),
                settings.completion_window_seconds, limits=settings.batch_limits())
    try:
        return run(jobs, args, settings)
    except (BatchNotFound, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(jobs: Jobs, args: argparse.Namespace, settings: JobsSettings) -> int:
    if args.command == "serve":
        return serve(jobs, settings)
    if args.command == "submit":
        batch = jobs.submit_jsonl(args.tenant, Path(args.file).read_text(encoding="utf-8"),
                                  completion_window_s=args.window)
        print(json.dumps(batch, indent=2))
        return watch(jobs, args.tenant, batch["id"]) if args.watch else 0
    if args.command == "watch":
        return watch(jobs, args.tenant, args.batch_id)
    if args.command == "webhook-secret":
        return show_secret(WebhookStore(jobs.store.sessions).signing, args.tenant, args.rotate,
                              settings.webhook_secret_grace_seconds)
    if args.command in ("status", "cancel"):
        view = jobs.get(args.tenant, args.batch_id) if args.command == "status" else \
            jobs.cancel(args.tenant, args.batch_id)
        print(json.dumps(view, indent=2))
        return 0
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    try:
        for line in jobs.results(args.tenant, args.batch_id):
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
    finally:
        if args.out:
            out.close()
    return 0


def watch(jobs: Jobs, tenant: str, batch_id: str, every: float = 1.0, width: int = 30) -> int:
    """A live progress line (done/failed, tokens so far, ETA) until the batch ends; the exit status says whether
    every request completed."""
    start = time.monotonic()
    while True:
        view = jobs.get(tenant, batch_id)
        counts, total = view["request_counts"], max(view["request_counts"]["total"], 1)
        ended = sum(n for status, n in view["requests_by_status"].items() if status not in ("queued", "running"))
        tokens = sum(p["tokens"] for p in jobs.store.progress(batch_id))
        elapsed = time.monotonic() - start
        eta = f"{elapsed / ended * (total - ended):.0f}s" if ended else "-"
        filled = width * ended // total
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {ended}/{total} ended "
                         f"({counts['completed']} done, {counts['failed']} failed) {tokens} tokens, ETA {eta} ")
        sys.stderr.flush()
        if view["status"] in ("completed", "failed", "expired", "cancelled"):
            sys.stderr.write(f"\n{view['status']}\n")
            return 0 if view["status"] == "completed" and not counts["failed"] else 1
        time.sleep(every)


def serve(jobs: Jobs, settings: JobsSettings) -> int:
    from services.jobs.serve import run_service

    return run_service(jobs, settings)
