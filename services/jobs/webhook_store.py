"""The webhooks' state in SQL: each ended batch's delivery attempts, taken one claim at a time (so two workers never
post the same batch at once, and one that dies mid-attempt leaves a claim that lapses), and each tenant's signing
secret."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import or_, select, update
from sqlalchemy.orm import sessionmaker

from foundation.webhooks.secrets import SecretStore, SigningSecrets
from services.jobs.tables import BATCH_DONE, Batch, BatchRequest, WebhookSecret, utcnow

MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class Attempt:
    """One claimed delivery attempt of a batch's webhook (its number counts from 1)."""

    batch_id: str
    number: int
    tenant: str
    url: str


class WebhookStore:
    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions
        self.signing = SecretStore(sessions, WebhookSecret)

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
        return self.signing.secrets(tenant)


def _due(now: dt.datetime, max_attempts: int) -> tuple:
    return (Batch.status.in_(BATCH_DONE), Batch.webhook_url.is_not(None), Batch.webhook_delivered_at.is_(None),
            Batch.webhook_attempts < max_attempts, or_(Batch.webhook_next_at.is_(None), Batch.webhook_next_at <= now))
