"""Turn webhooks in SQL: the events waiting for delivery, claimed one attempt at a time by whichever runtime gets the
row first (so two never post one event at once, and an attempt whose runtime died lapses and is taken over), and
each tenant's signing secret."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from agent_runtime.store.tables import TurnWebhook, WebhookSecret
from foundation.sql import utcnow
from foundation.webhooks.secrets import SecretStore, SigningSecrets

MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class Attempt:
    """One claimed attempt at an event (its number counts from 1)."""

    tenant: str
    event_id: str
    number: int
    url: str
    body: bytes


class TurnWebhookStore:
    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions
        self.signing = SecretStore(sessions, WebhookSecret)

    def add(self, tenant: str, event_id: str, turn_id: str, url: str, body: bytes) -> bool:
        """Queue an event for delivery; False when it was queued already (a turn continued elsewhere emits the
        same event again: one delivery)."""
        try:
            with self.sessions.begin() as s:
                s.add(TurnWebhook(tenant=tenant, event_id=event_id, turn_id=turn_id, url=url, body=body.decode(),
                                  attempts=0, next_at=utcnow()))
            return True
        except IntegrityError:
            return False

    def due(self, max_attempts: int, limit: int = 100) -> list[tuple[str, str]]:
        """(tenant, event ID) of the events whose next attempt may start now."""
        with self.sessions() as s:
            return [tuple(row) for row in s.execute(select(TurnWebhook.tenant, TurnWebhook.event_id)
                                                    .where(*_due(utcnow(), max_attempts)).limit(limit))]

    def claim(self, tenant: str, event_id: str, max_attempts: int, hold_s: float) -> Attempt | None:
        """Take the event's next attempt, holding it for `hold_s`; None when another runtime has it, or it is
        waiting out its backoff, delivered or given up."""
        now = utcnow()
        with self.sessions.begin() as s:
            claimed = s.execute(update(TurnWebhook).where(TurnWebhook.tenant == tenant,
                                                          TurnWebhook.event_id == event_id, *_due(now, max_attempts))
                                .values(attempts=TurnWebhook.attempts + 1,
                                        next_at=now + dt.timedelta(seconds=hold_s))).rowcount
            if claimed != 1:
                return None
            row = s.get(TurnWebhook, (tenant, event_id))
            return Attempt(tenant, event_id, row.attempts, row.url, row.body.encode())

    def delivered(self, attempt: Attempt) -> None:
        with self.sessions.begin() as s:
            s.execute(update(TurnWebhook).where(*_row(attempt), TurnWebhook.delivered_at.is_(None))
                      .values(delivered_at=utcnow(), last_error=None))

    def failed(self, attempt: Attempt, error: str, retry_in_s: float) -> None:
        """Why the attempt failed; the next may start after `retry_in_s` (left alone if a later attempt took the
        lapsed claim over)."""
        with self.sessions.begin() as s:
            s.execute(update(TurnWebhook).where(*_row(attempt), TurnWebhook.delivered_at.is_(None),
                                                TurnWebhook.attempts == attempt.number)
                      .values(last_error=error[:MAX_ERROR_CHARS],
                              next_at=utcnow() + dt.timedelta(seconds=retry_in_s)))

    def of_turn(self, tenant: str, turn_id: str) -> list[TurnWebhook]:
        with self.sessions() as s:
            return list(s.scalars(select(TurnWebhook).where(TurnWebhook.tenant == tenant,
                                                            TurnWebhook.turn_id == turn_id)
                                  .order_by(TurnWebhook.created_at)))

    def secrets(self, tenant: str) -> SigningSecrets:
        return self.signing.secrets(tenant)


def _due(now: dt.datetime, max_attempts: int) -> tuple:
    return TurnWebhook.delivered_at.is_(None), TurnWebhook.attempts < max_attempts, TurnWebhook.next_at <= now


def _row(attempt: Attempt) -> tuple:
    return TurnWebhook.tenant == attempt.tenant, TurnWebhook.event_id == attempt.event_id
