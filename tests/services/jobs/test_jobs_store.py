"""The batch lifecycle in SQL (SQLite here; PostgreSQL in the Celery tests): claims and leases, exactly one result and
one usage row per custom_id whatever runs twice, cancellation, expiry and the reaper."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select, update

from services.jobs.db import make_engine, sessions, upgrade
from services.jobs.job_store import BatchNotFound, JobStore, Outcome
from services.jobs.spec import parse_jsonl
from services.jobs.tables import BatchRequest, Result, UsageLedger


def line(custom_id: str, **body) -> str:
    import json

    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"messages": [{"role": "user", "content": "hi"}], **body}})


@pytest.fixture
def store(tmp_path) -> JobStore:
    url = f"sqlite:///{tmp_path}/jobs.db"
    upgrade(url)
    return JobStore(sessions(make_engine(url)))


def submit(store: JobStore, *custom_ids: str, window: int = 3600, tenant: str = "acme"):
    valid, invalid = parse_jsonl("\n".join(line(c) for c in custom_ids))
    return store.submit(tenant, valid, invalid, window)


def rows(store: JobStore, model) -> int:
    with store.sessions() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_a_request_ends_once_whoever_runs_it(store):
    batch, published = submit(store, "a", "b")
    (first, queue), (second, _) = published
    assert queue == "think_max"  # Think Max is the default mode
    assert store.claim(first, "w1", 60) is not None
    assert store.claim(first, "w2", 60) is None  # held
    assert store.renew(first, "w1", 60, "decode", 5) == "ok"
    assert store.renew(first, "w2", 60, "decode", 5) == "lost"
    done = Outcome("completed", response={"id": "x"}, usage={"prompt_tokens": 3, "completion_tokens": 5})
    assert store.finish(first, "w1", done)
    assert not store.finish(first, "w1", done)  # a duplicate delivery writes nothing
    assert store.claim(first, "w2", 60) is None  # ended
    assert store.claim(second, "w1", 60) is not None
    assert store.finish(second, "w1", Outcome("failed", error={"code": "x", "message": "y"}))
    view = store.get("acme", batch.id)
    assert (view.status, view.completed, view.failed) == ("completed", 1, 1)
    assert rows(store, Result) == rows(store, UsageLedger) == 2
    with store.sessions() as s:
        assert s.scalar(select(UsageLedger.completion_tokens).where(UsageLedger.custom_id == "a")) == 5


def test_an_expired_lease_goes_to_the_next_worker_and_the_old_one_writes_nothing(store):
    _, [(request, _)] = submit(store, "a")
    store.claim(request, "dead", 60)
    with store.sessions.begin() as s:  # its lease runs out
        s.execute(update(BatchRequest).values(lease_expires_at=dt.datetime.now(dt.timezone.utc)
                                              - dt.timedelta(seconds=1)))
    assert store.reap(requeue_after_s=3600) == []  # back to queued; published again only when stale
    assert store.claim(request, "alive", 60) is not None
    assert not store.finish(request, "dead", Outcome("completed", response={}))
    assert store.finish(request, "alive", Outcome("completed", response={}))
    assert rows(store, Result) == rows(store, UsageLedger) == 1


def test_cancel_ends_queued_requests_and_running_ones_at_their_next_renewal(store):
    batch, [(running, _), (queued, _)] = submit(store, "a", "b")
    store.claim(running, "w", 60)
    assert store.cancel("acme", batch.id).status == "cancelling"
    assert store.claim(queued, "w", 60) is None  # never starts
    assert store.renew(running, "w", 60, "decode", 9) == "cancel"
    partial = Outcome("cancelled", response={"choices": []}, usage={"completion_tokens": 9})
    assert store.finish(running, "w", partial)
    view = store.get("acme", batch.id)
    assert view.status == "cancelled" and view.cancelled_at is not None
    assert store.counts(batch.id) == {"cancelled": 2}
    assert rows(store, UsageLedger) == 2


def test_expiry_and_lost_messages(store):
    batch, [(late, _)] = submit(store, "a", window=1)
    with store.sessions.begin() as s:
        s.execute(update(BatchRequest).values(enqueued_at=dt.datetime.now(dt.timezone.utc)
                                              - dt.timedelta(hours=1)))
    _, [(lost, queue)] = submit(store, "b")
    with store.sessions.begin() as s:
        s.execute(update(BatchRequest).where(BatchRequest.id == lost)
                  .values(enqueued_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)))
    import time

    time.sleep(1.1)
    assert store.reap(requeue_after_s=60) == [(lost, queue, {})]  # published again; the expired one is not
    assert store.get("acme", batch.id).status == "expired"
    assert store.reap(requeue_after_s=60) == []  # not again until it is stale again


def test_invalid_lines_and_tenants(store):
    text = "\n".join([line("a"), "{not json", line("a"), line("b", reasoning_effort="extreme"),
                      line("c", messages=[]), line("d", n=2), line("e", reasoning_effort="high")])
    valid, invalid = parse_jsonl(text)
    assert [request.custom_id for _, request in valid] == ["a", "e"] and valid[1][1].queue == "default"
    assert [e.line for e in invalid] == [2, 3, 4, 5, 6]
    batch, _ = store.submit("acme", valid, invalid, 3600)
    assert [e["line"] for e in store.get("acme", batch.id).invalid_lines] == [2, 3, 4, 5, 6]
    with pytest.raises(BatchNotFound):
        store.get("other-tenant", batch.id)
    empty, published = store.submit("acme", [], invalid, 3600)
    assert empty.status == "failed" and published == []
    assert [b.id for b in store.list("acme", limit=1)] == [empty.id]
    assert [b.id for b in store.list("acme", limit=5, after=empty.id)] == [batch.id]


def test_the_migrations_build_the_models_schema(store):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from services.jobs.tables import Base

    with store.sessions().connection() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": "jobs_alembic_version"})
        assert compare_metadata(context, Base.metadata) == []
