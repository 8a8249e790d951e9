"""The webhooks' state in SQL: each ended batch's delivery attempts, taken one claim at a time (so two workers never
post the same batch at once, and one that dies mid-attempt leaves a claim that lapses), and each tenant's signing
secret."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from services.jobs.signing import new_secret
from services.jobs.tables import BATCH_DONE, Batch, BatchRequest, WebhookSecret, utcnow

MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class Attempt:
    """One claimed delivery attempt of a batch's webhook (its number counts from 1)."""

    batch_id: str
    number: int
    tenant: str
    url: str


@dataclass(frozen=True)
class SigningSecrets:
    """A tenant's current secret, and the previous one while it still signs."""

    current: str
    previous: str | None = None
    previous_until: dt.datetime | None = None

    def signing(self) -> list[str]:
        return [self.current] + ([self.previous] if self.previous else [])


class WebhookStore:
    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions

    # -- delivery attempts ---------------------------------------------------------------------------------------

    def due(self, max_attempts: int, *, request_id: int | None = None, limit: int = 1000) -> list[str]:
        """Ended batches whose webhook may be attempted now; with `request_id`, only the batch it belongs to."""
        query = select(Batch.id).where(*_due(utcnow(), max_attempts))
        if request_id is not None:
            query = query.join(BatchRequest, BatchRequest.batch_id == Batch.id).where(BatchRequest.id == request_id)
        with self.sessions() as s:
            return list(s.scalars(query.limit(limit)))

    def claim(self, batch_id: str, max_attempts: int, hold_s: float) -> Attempt | None:
        """Take the next attempt if it is due, holding it for `hold_s` (past that, a worker that died mid-attempt
        is taken over); None when another holds it, its backoff has not passed, it was delivered or gave up."""
        now = utcnow()
        with self.sessions.begin() as s:
            claimed = s.execute(update(Batch).where(Batch.id == batch_id, *_due(now, max_attempts))
                                .values(webhook_attempts=Batch.webhook_attempts + 1,
                                        webhook_next_at=now + dt.timedelta(seconds=hold_s))).rowcount
            if claimed != 1:
                return None
            batch = s.get(Batch, batch_id)
            return Attempt(batch.id, batch.webhook_attempts, batch.tenant, batch.webhook_url)

    def delivered(self, attempt: Attempt) -> None:
        """A 2xx answer is a fact whichever attempt got it: the webhook is never sent again."""
        with self.sessions.begin() as s:
            s.execute(update(Batch).where(Batch.id == attempt.batch_id, Batch.webhook_delivered_at.is_(None))
                      .values(webhook_delivered_at=utcnow(), webhook_last_error=None))

    def failed(self, attempt: Attempt, error: str, retry_in_s: float) -> None:
        """Record why the attempt failed; the next may start after `retry_in_s`. A later attempt that took over
        this one's lapsed claim owns the row now, and is left alone."""
        with self.sessions.begin() as s:
            s.execute(update(Batch).where(Batch.id == attempt.batch_id, Batch.webhook_delivered_at.is_(None),
                                          Batch.webhook_attempts == attempt.number)
                      .values(webhook_last_error=error[:MAX_ERROR_CHARS],
                              webhook_next_at=utcnow() + dt.timedelta(seconds=retry_in_s)))

    # -- signing secrets ---------------------------------------------------------------------------------------

    def secrets(self, tenant: str) -> SigningSecrets:
        """The tenant's secrets, its first made now if it has none; a previous one past its grace is left out."""
        with self.sessions() as s:
            row = s.get(WebhookSecret, tenant)
        if row is None:
            try:
                with self.sessions.begin() as s:
                    row = WebhookSecret(tenant=tenant, secret=new_secret(), created_at=utcnow())
                    s.add(row)
            except IntegrityError:  # another process made it first: theirs is the one
                with self.sessions() as s:
                    row = s.get(WebhookSecret, tenant)
        return _view(row)

    def rotate(self, tenant: str, grace_s: float) -> SigningSecrets:
        """A new random secret for the tenant; the one it replaces still signs for `grace_s` (only the latest
        replaced one: rotating again within the grace ends the older one's at once)."""
        self.secrets(tenant)  # there is one to replace
        now = utcnow()
        with self.sessions.begin() as s:
            row = s.get(WebhookSecret, tenant, with_for_update=True)
            row.previous_secret, row.previous_until = row.secret, now + dt.timedelta(seconds=grace_s)
            row.secret, row.rotated_at = new_secret(), now
            return _view(row)


def _due(now: dt.datetime, max_attempts: int) -> tuple:
    return (Batch.status.in_(BATCH_DONE), Batch.webhook_url.is_not(None), Batch.webhook_delivered_at.is_(None),
            Batch.webhook_attempts < max_attempts, or_(Batch.webhook_next_at.is_(None), Batch.webhook_next_at <= now))


def _view(row: WebhookSecret) -> SigningSecrets:
    in_grace = row.previous_secret is not None and row.previous_until is not None and row.previous_until > utcnow()
    return SigningSecrets(row.secret, row.previous_secret if in_grace else None,
                          row.previous_until if in_grace else None)
