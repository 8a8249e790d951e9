"""Poison lines end: a request that fails by anything but the model worker being unavailable (an exception no
handler knows, its worker process dying) ends failed with its error after `max_attempts` attempts, counted in its
batch, which then ends; one the worker's call cannot carry fails at once. The transitions on SQL (SQLite), then a
batch on real parts (PostgreSQL, Redis, a Celery worker process, a model worker)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from realparts import start_celery, wait_for
from sqlalchemy import select, update

from services.jobs.db import make_engine, sessions, upgrade
from services.jobs.job_store import JobStore, Outcome
from services.jobs.spec import parse_jsonl
from services.jobs.tables import BatchRequest, Result


def line(custom_id: str, **body) -> str:
    return json.dumps({"custom_id": custom_id, "body": {"messages": [{"role": "user", "content": f"say {custom_id}"}],
                                                        "reasoning_effort": "none", "max_tokens": 3,
                                                        "temperature": 0, **body}})


@pytest.fixture
def store(tmp_path) -> JobStore:
    url = f"sqlite:///{tmp_path}/jobs.db"
    upgrade(url)
    return JobStore(sessions(make_engine(url)), max_attempts=3)


def submit(store: JobStore, *custom_ids: str):
    valid, _ = parse_jsonl("\n".join(line(c) for c in custom_ids))
    return store.submit("acme", valid, [], 3600)


def lapse(store: JobStore, request_id: int) -> None:
    """Its worker process died: nothing renews the lease, which runs out."""
    with store.sessions.begin() as s:
        s.execute(update(BatchRequest).where(BatchRequest.id == request_id)
                  .values(lease_expires_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)))


def error_of(store: JobStore, request_id: int) -> dict:
    with store.sessions() as s:
        return s.scalar(select(Result.error).where(Result.request_id == request_id))


def test_a_line_that_kills_its_worker_every_time_ends_when_the_reaper_counts_its_last_attempt(store):
    batch, [(poison, _), (fine, _)] = submit(store, "poison", "fine")
    for attempt in (1, 2, 3):
        assert store.claim(poison, f"worker-{attempt}", 60) is not None
        lapse(store, poison)
        store.reap(requeue_after_s=3600)
    assert store.counts(batch.id) == {"failed": 1, "queued": 1}  # the third death was its last attempt
    assert store.claim(poison, "worker-4", 60) is None
    assert error_of(store, poison) == {"code": "attempts_exhausted", "message": "failed 3 attempts; the last: "
                                       "worker_lost: the process running it stopped"}
    assert store.claim(fine, "worker-5", 60) is not None
    assert store.finish(fine, "worker-5", Outcome("completed", response={}))
    view = store.get("acme", batch.id)
    assert (view.status, view.completed, view.failed) == ("completed", 1, 1)


def test_a_claim_ends_a_request_whose_attempts_are_spent_before_the_reaper_does(store):
    batch, [(poison, _)] = submit(store, "poison")
    for attempt in (1, 2, 3):
        assert store.claim(poison, f"worker-{attempt}", 60) is not None
        lapse(store, poison)  # taken over by the next claim directly: no reap in between
    assert store.claim(poison, "worker-4", 60) is None
    assert store.get("acme", batch.id).status == "completed" and store.counts(batch.id) == {"failed": 1}


def test_attempts_that_raise_are_retried_and_the_last_ends_failed_with_its_error(store):
    batch, [(poison, _)] = submit(store, "poison")
    verdicts = []
    for attempt in (1, 2, 3):
        store.claim(poison, "w", 60)
        verdicts.append(store.fail_attempt(poison, "w", {"code": "KeyError", "message": f"'name' ({attempt})"}))
    assert verdicts == ["requeued", "requeued", "failed"]
    assert error_of(store, poison) == {"code": "attempts_exhausted",
                                       "message": "failed 3 attempts; the last: KeyError: 'name' (3)"}
    assert store.fail_attempt(poison, "w", {"code": "x", "message": "y"}) == "lost"  # ended: nothing changes
    assert store.get("acme", batch.id).failed == 1


def test_attempts_handed_back_for_an_unavailable_worker_do_not_count(store):
    batch, [(request, _)] = submit(store, "patient")
    for _ in range(5):  # the model worker was down each time
        assert store.claim(request, "w", 60) is not None
        store.release(request, "w")
    assert store.claim(request, "w", 60) is not None
    assert store.finish(request, "w", Outcome("completed", response={}))
    assert store.progress(batch.id)[0]["attempts"] == 6 and store.get("acme", batch.id).completed == 1


def test_a_poison_line_ends_failed_after_its_attempts_while_the_others_complete(database_url, broker_url,
                                                                                model_worker, tmp_path):
    from services.jobs import celery_app
    from services.jobs.settings import JobsSettings
    from services.jobs.use_cases import Jobs

    target, _ = model_worker
    settings = dict(database_url=database_url, broker_url=broker_url, worker_target=target, max_attempts=3,
                    result_store=str(tmp_path / "results"), lease_seconds=3)
    celery_app.configure(JobsSettings(**settings))  # this process publishes to the same broker
    celery = start_celery(tmp_path, "poison", **settings)
    jobs = Jobs(JobStore(sessions(make_engine(database_url))), celery_app.CeleryPublisher())
    try:
        # Stored but not yet published: the poison line's row is then broken the way no handler expects (its
        # body lacks its messages), so every attempt raises in the runner; the too-wide one holds what submission
        # now refuses (a row stored before that bound) and the worker's call cannot carry.
        valid, _ = parse_jsonl("\n".join([line("ok-1"), line("too-wide"), line("poison"), line("ok-2")]))
        batch, to_publish = jobs.store.submit("acme", valid, [], 3600)
        ids = {request.custom_id: request_id for (_, request), (request_id, _) in zip(valid, to_publish)}
        too_wide = valid[1][1].to_json()
        too_wide["sampling"]["top_k"] = 2 ** 40
        with jobs.store.sessions.begin() as s:
            s.execute(update(BatchRequest).where(BatchRequest.id == ids["poison"]).values(body={"custom_id": "poison"}))
            s.execute(update(BatchRequest).where(BatchRequest.id == ids["too-wide"]).values(body=too_wide))
        celery_app.publish(to_publish)
        view = wait_for(lambda: (v := jobs.get("acme", batch.id))["status"] != "in_progress" and v, 90,
                        "the batch did not end")
        assert view["status"] == "completed"
        assert view["request_counts"] == {"total": 4, "completed": 2, "failed": 2}
        attempts = {p["custom_id"]: p["attempts"] for p in jobs.store.progress(batch.id)}
        assert attempts == {"ok-1": 1, "too-wide": 1, "poison": 3, "ok-2": 1}
        errors = {r["custom_id"]: r["error"] for r in jobs.results("acme", batch.id)}
        assert errors["ok-1"] is None and errors["ok-2"] is None
        assert errors["too-wide"]["code"] == "invalid_request" and "out of range" in errors["too-wide"]["message"]
        assert errors["poison"]["code"] == "attempts_exhausted"
        assert errors["poison"]["message"].startswith("failed 3 attempts; the last: TypeError: ")
    finally:
        celery.stop()


@pytest.mark.parametrize("field, value", [("top_k", 2 ** 40), ("seed", 2 ** 64), ("seed", -1), ("max_tokens", 2 ** 31)])
def test_a_number_past_the_workers_wire_type_is_an_invalid_line(field, value):
    valid, invalid = parse_jsonl("\n".join([line("ok"), line("wide", **{field: value})]))
    assert [request.custom_id for _, request in valid] == ["ok"]
    assert len(invalid) == 1 and field in str(invalid[0])
