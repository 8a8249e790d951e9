"""The jobs repository (`JobStore`), batches in SQL: submit, read, list, cancel, and every transition of a request
(claim, renew, finish) with the batch's counts and status kept in step. Each transition is one transaction guarded by
the request's current status and lease owner, and results and usage rows are unique per (batch, custom_id), so
whatever the broker delivers twice or loses, a request ends exactly once. Locks are taken batch row first, then
request rows, in every transaction that takes both."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from foundation.webhooks.destinations import Destinations
from services.jobs.spec import InvalidLine, JobRequest
from services.jobs.tables import (
    BATCH_DONE,
    CANCELLED,
    CANCELLING,
    EXPIRED,
    FAILED,
    IN_PROGRESS,
    QUEUED,
    RUNNING,
    Batch,
    BatchRequest,
    Result,
    utcnow,
)
from services.jobs.transitions import (
    USAGE_FIELDS,
    BatchNotFound,
    Outcome,
    attempts_spent,
    end_request,
    finalize,
    lock_batch,
)

MAX_ATTEMPTS = 3
__all__ = ["MAX_ATTEMPTS", "USAGE_FIELDS", "BatchNotFound", "JobStore", "Outcome"]


class JobStore:
    def __init__(self, sessions: sessionmaker, max_attempts: int = MAX_ATTEMPTS,
                 destinations: Destinations = Destinations()) -> None:
        """`max_attempts`: the attempts a request may fail (an exception, its worker process dying) before it ends
        failed; `destinations`: the webhook allow-list, for URLs whose host is an address."""
        self.sessions, self.max_attempts, self.destinations = sessions, max_attempts, destinations

    # -- batches ---------------------------------------------------------------------------------------------

    def submit(self, tenant: str, valid: Sequence[tuple[int, JobRequest]], invalid: Sequence[InvalidLine],
               completion_window_s: int, metadata: dict[str, str] | None = None, webhook_url: str | None = None,
               trace_context: dict[str, str] | None = None) -> tuple[Batch, list[tuple[int, str]]]:
        """Store a batch and its valid requests; returns it with the (request id, queue) pairs to publish. A batch
        with no valid request is failed at once (its invalid lines say why). A webhook URL this service will not
        call raises InvalidWebhookUrl."""
        webhook_url = webhook_url or None
        if webhook_url is not None:
            self.destinations.check_submitted(webhook_url)
        now = utcnow()
        batch = Batch(id=f"batch_{uuid.uuid4().hex}", tenant=tenant, status=IN_PROGRESS if valid else FAILED,
                      completion_window_s=completion_window_s, total=len(valid), completed=0, failed=0,
                      invalid_lines=[{"line": e.line, "message": e.message} for e in invalid],
                      metadata_=dict(metadata or {}), webhook_url=webhook_url, trace_context=dict(trace_context or {}),
                      created_at=now, expires_at=now + dt.timedelta(seconds=completion_window_s),
                      in_progress_at=now if valid else None, failed_at=None if valid else now)
        rows = [BatchRequest(batch_id=batch.id, custom_id=r.custom_id, line=line, body=r.to_json(), queue=r.queue,
                             status=QUEUED, attempts=0, phase=QUEUED, tokens_so_far=0, enqueued_at=now)
                for line, r in valid]
        with self.sessions.begin() as s:
            s.add(batch)
            s.flush()
            s.add_all(rows)
        return batch, [(row.id, row.queue) for row in rows]

    def get(self, tenant: str, batch_id: str) -> Batch:
        with self.sessions() as s:
            batch = s.get(Batch, batch_id)
            if batch is None or batch.tenant != tenant:
                raise BatchNotFound(f"no batch {batch_id}")
            return batch

    def get_any(self, batch_id: str) -> Batch:
        """A batch whatever its tenant (for the service's own housekeeping)."""
        with self.sessions() as s:
            batch = s.get(Batch, batch_id)
            if batch is None:
                raise BatchNotFound(f"no batch {batch_id}")
            return batch

    def list(self, tenant: str, limit: int = 20, after: str | None = None) -> list[Batch]:
        """Newest first; `after` is the last batch ID of the previous page."""
        with self.sessions() as s:
            query = select(Batch).where(Batch.tenant == tenant)
            if after:
                anchor = s.get(Batch, after)
                if anchor is None or anchor.tenant != tenant:
                    raise BatchNotFound(f"no batch {after}")
                query = query.where(or_(Batch.created_at < anchor.created_at,
                                        and_(Batch.created_at == anchor.created_at, Batch.id < anchor.id)))
            return list(s.scalars(query.order_by(Batch.created_at.desc(), Batch.id.desc()).limit(limit)))

    def counts(self, batch_id: str) -> dict[str, int]:
        """Requests by status (queued, running, completed, failed, cancelled, expired)."""
        with self.sessions() as s:
            rows = s.execute(select(BatchRequest.status, func.count()).where(BatchRequest.batch_id == batch_id)
                             .group_by(BatchRequest.status))
            return {status: n for status, n in rows}

    def progress(self, batch_id: str) -> list[dict[str, Any]]:
        """Per request: custom_id, status, phase and tokens so far (in input order)."""
        with self.sessions() as s:
            rows = s.execute(select(BatchRequest.custom_id, BatchRequest.status, BatchRequest.phase,
                                    BatchRequest.tokens_so_far, BatchRequest.attempts)
                             .where(BatchRequest.batch_id == batch_id).order_by(BatchRequest.line))
            return [dict(custom_id=c, status=st, phase=p, tokens=t, attempts=a) for c, st, p, t, a in rows]

    def results(self, tenant: str, batch_id: str) -> Iterator[tuple[BatchRequest, Result]]:
        """Each ended request with its result, in input order (streamed from the database)."""
        self.get(tenant, batch_id)
        with self.sessions() as s:
            query = (select(BatchRequest, Result).join(Result, Result.request_id == BatchRequest.id)
                     .where(BatchRequest.batch_id == batch_id).order_by(BatchRequest.line)
                     .execution_options(yield_per=256))
            for request, result in s.execute(query):
                yield request, result

    def ended_since(self, batch_id: str, after: tuple[dt.datetime, int] | None, limit: int = 256
                    ) -> list[tuple[BatchRequest, Result]]:
        """Results in the order their requests ended, after the cursor (created_at, request id) of the last one."""
        with self.sessions() as s:
            query = (select(BatchRequest, Result).join(Result, Result.request_id == BatchRequest.id)
                     .where(Result.batch_id == batch_id))
            if after is not None:
                query = query.where(or_(Result.created_at > after[0],
                                        and_(Result.created_at == after[0], Result.request_id > after[1])))
            query = query.order_by(Result.created_at, Result.request_id).limit(limit)
            return [(request, result) for request, result in s.execute(query)]

    def cancel(self, tenant: str, batch_id: str) -> Batch:
        """Queued requests end now, cancelled; running ones stop at their next lease renewal."""
        with self.sessions.begin() as s:
            batch = lock_batch(s, batch_id, tenant)
            if batch.status in BATCH_DONE or batch.status == CANCELLING:
                return batch
            batch.status, batch.cancelling_at = CANCELLING, utcnow()
            queued = s.scalars(select(BatchRequest).where(BatchRequest.batch_id == batch_id,
                                                          BatchRequest.status == QUEUED)).all()
            for request in queued:
                end_request(s, batch, request, Outcome(CANCELLED, error={"code": "batch_cancelled",
                                                                         "message": "cancelled before it started"}))
            finalize(s, batch)
            return batch

    # -- one request's life ---------------------------------------------------------------------------------

    def claim(self, request_id: int, owner: str, lease_s: float) -> tuple[BatchRequest, Batch] | None:
        """Take the request if it is queued or its lease expired; None if someone else holds it or it ended. A
        request of a cancelling or expired batch ends instead of starting, and so does one that has failed
        `max_attempts` attempts (the last may have killed its worker: nothing but this count says so)."""
        now = utcnow()
        claimable = (BatchRequest.id == request_id,
                     or_(BatchRequest.status == QUEUED,
                         and_(BatchRequest.status == RUNNING, BatchRequest.lease_expires_at < now)))
        with self.sessions.begin() as s:
            batch_id = s.scalar(select(BatchRequest.batch_id).where(BatchRequest.id == request_id))
            if batch_id is None:
                return None
            batch = lock_batch(s, batch_id)
            claimed = s.execute(
                update(BatchRequest)
                .where(*claimable, BatchRequest.attempts - BatchRequest.handed_back < self.max_attempts)
                .values(status=RUNNING, lease_owner=owner, lease_expires_at=now + dt.timedelta(seconds=lease_s),
                        attempts=BatchRequest.attempts + 1, started_at=func.coalesce(BatchRequest.started_at, now),
                        phase="prefill")).rowcount
            if claimed != 1:
                spent = s.scalar(select(BatchRequest).where(*claimable))  # claimable, but out of attempts
                if spent is not None:
                    end_request(s, batch, spent, attempts_spent(spent))
                    finalize(s, batch)
                return None
            request = s.get(BatchRequest, request_id)
            if batch.status == CANCELLING:
                end_request(s, batch, request, Outcome(CANCELLED, error={"code": "batch_cancelled",
                                                                         "message": "cancelled before it started"}))
            elif now >= batch.expires_at:
                end_request(s, batch, request, Outcome(EXPIRED, error={"code": "batch_expired",
                                                                       "message": "the batch's window ended"}))
            else:
                return request, batch
            finalize(s, batch)
            return None

    def renew(self, request_id: int, owner: str, lease_s: float, phase: str, tokens: int) -> str:
        """Extend the lease and record progress: "ok", "cancel" (the batch is being cancelled) or "lost" (the
        lease went to someone else: stop without writing anything)."""
        now = utcnow()
        with self.sessions.begin() as s:
            renewed = s.execute(
                update(BatchRequest)
                .where(BatchRequest.id == request_id, BatchRequest.lease_owner == owner,
                       BatchRequest.status == RUNNING)
                .values(lease_expires_at=now + dt.timedelta(seconds=lease_s), phase=phase,
                        tokens_so_far=tokens)).rowcount
            if renewed != 1:
                return "lost"
            status = s.scalar(select(Batch.status).join(BatchRequest, BatchRequest.batch_id == Batch.id)
                              .where(BatchRequest.id == request_id))
            return "cancel" if status == CANCELLING else "ok"

    def release(self, request_id: int, owner: str) -> None:
        """Give the request back to the queue because the model worker could not take it now (its worker will
        retry it later): not the request's failure, so the attempt does not count against `max_attempts`."""
        with self.sessions.begin() as s:
            s.execute(update(BatchRequest).where(BatchRequest.id == request_id, BatchRequest.lease_owner == owner,
                                                 BatchRequest.status == RUNNING)
                      .values(status=QUEUED, lease_owner=None, lease_expires_at=None, phase=QUEUED,
                              enqueued_at=utcnow(), handed_back=BatchRequest.handed_back + 1))

    def fail_attempt(self, request_id: int, owner: str, error: dict[str, str]) -> str:
        """The running attempt failed with `error` (an exception no handler knew): "requeued" to be tried again,
        "failed" when it was the last of `max_attempts` (the request ends failed, the error in its result), or
        "lost" when the lease is no longer `owner`'s."""
        with self.sessions.begin() as s:
            request = s.get(BatchRequest, request_id)
            if request is None:
                return "lost"
            batch = lock_batch(s, request.batch_id)
            s.refresh(request)
            if request.status != RUNNING or request.lease_owner != owner:
                return "lost"
            request.last_error = error
            if request.attempts - request.handed_back >= self.max_attempts:
                end_request(s, batch, request, attempts_spent(request))
                finalize(s, batch)
                return "failed"
            request.status, request.phase, request.enqueued_at = QUEUED, QUEUED, utcnow()
            request.lease_owner, request.lease_expires_at = None, None
            return "requeued"

    def finish(self, request_id: int, owner: str, outcome: Outcome) -> bool:
        """End a running request held by `owner`: its result and usage rows and the batch's counts, in one
        transaction. False (and nothing written) when the lease was lost or the request already ended."""
        try:
            with self.sessions.begin() as s:
                request = s.get(BatchRequest, request_id)
                if request is None:
                    return False
                batch = lock_batch(s, request.batch_id)
                s.refresh(request)
                if request.status != RUNNING or request.lease_owner != owner:
                    return False
                end_request(s, batch, request, outcome)
                finalize(s, batch)
                return True
        except IntegrityError:  # a result for this custom_id exists already: it ended elsewhere
            return False

    # -- housekeeping ----------------------------------------------------------------------------------------

    def reap(self, requeue_after_s: float) -> list[tuple[int, str, dict[str, str]]]:
        """Requests to publish again, with their batch's trace context: running ones whose lease expired (their
        worker died, which counts as a failed attempt) go back to queued, or end failed when that was their last
        attempt, and queued ones waiting longer than `requeue_after_s` (their message may be lost; a duplicate
        finds them claimed and does nothing). Batches past their window expire what has not started."""
        now = utcnow()
        with self.sessions.begin() as s:  # request rows only
            s.execute(update(BatchRequest)
                      .where(BatchRequest.status == RUNNING, BatchRequest.lease_expires_at < now)
                      .values(status=QUEUED, lease_owner=None, lease_expires_at=None, phase=QUEUED, enqueued_at=now))
        spent = (BatchRequest.status == QUEUED, BatchRequest.attempts - BatchRequest.handed_back >= self.max_attempts)
        with self.sessions() as s:
            with_spent = list(s.scalars(select(BatchRequest.batch_id).where(*spent).distinct()))
        for batch_id in with_spent:
            with self.sessions.begin() as s:
                batch = lock_batch(s, batch_id)
                for request in s.scalars(select(BatchRequest).where(BatchRequest.batch_id == batch_id, *spent)).all():
                    end_request(s, batch, request, attempts_spent(request))
                finalize(s, batch)
        with self.sessions() as s:
            past_window = list(s.scalars(select(Batch.id).where(Batch.status == IN_PROGRESS, Batch.expires_at <= now)))
        for batch_id in past_window:
            with self.sessions.begin() as s:
                batch = lock_batch(s, batch_id)
                for request in s.scalars(select(BatchRequest).where(BatchRequest.batch_id == batch_id,
                                                                    BatchRequest.status == QUEUED)).all():
                    end_request(s, batch, request, Outcome(EXPIRED, error={"code": "batch_expired",
                                                                           "message": "the batch's window ended"}))
                finalize(s, batch)
        with self.sessions.begin() as s:
            stale = now - dt.timedelta(seconds=requeue_after_s)
            rows = s.execute(select(BatchRequest.id, BatchRequest.queue, Batch.trace_context)
                             .join(Batch, Batch.id == BatchRequest.batch_id)
                             .where(BatchRequest.status == QUEUED, BatchRequest.enqueued_at <= stale))
            again = [(request_id, queue, trace or {}) for request_id, queue, trace in rows]
            if again:
                s.execute(update(BatchRequest).where(BatchRequest.id.in_([i for i, _, _ in again]))
                          .values(enqueued_at=now))
            return again
