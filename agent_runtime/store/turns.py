"""Turns in SQL: one active turn per agent session, owned by the runtime process that runs it and kept alive by its
heartbeat; a turn whose heartbeat went stale was orphaned by a crash and ends interrupted. A turn's durable events
are stored by seq, so a caller can reattach from a cursor, in this process or any other. A turn ID is its tenant's
own: every method names the tenant, and another tenant's turn of the same ID is another turn."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from agent_runtime.store.errors import AgentSessionNotFound, TurnActive, TurnExists, TurnNotFound
from agent_runtime.store.tables import (
    CANCELLED,
    RUNNING,
    TURN_ACTIVE,
    TURN_INTERRUPTED,
    AgentSession,
    TurnEventRecord,
    TurnRecord,
)
from foundation.sql import utcnow

__all__ = ["TurnActive", "TurnExists", "TurnNotFound", "TurnStore"]


class TurnStore:
    def __init__(self, sessions: sessionmaker, stale_after_s: float = 30.0) -> None:
        self.sessions, self.stale_after = sessions, dt.timedelta(seconds=stale_after_s)

    def start(self, tenant: str, session_id: str, turn_id: str, owner: str, request: dict[str, Any]) -> TurnRecord:
        """A new running turn, if the session runs none (an orphaned one ends interrupted first)."""
        try:
            with self.sessions.begin() as s:
                session = s.get(AgentSession, (tenant, session_id), with_for_update=True)
                if session is None or session.deleted:
                    raise AgentSessionNotFound(f"no agent session {session_id}")
                if s.get(TurnRecord, (tenant, turn_id)) is not None:
                    raise TurnExists(f"turn {turn_id} exists")
                self._check_idle(s, session)
                now = utcnow()
                s.add(TurnRecord(id=turn_id, session_id=session_id, tenant=tenant, status=RUNNING, via_job=False,
                                 content="", usage={}, owner=owner, heartbeat_at=now, cancel_requested=False,
                                 next_event=0, first_step=session.steps + 1, request=request, created_at=now))
                session.active_turn = turn_id
        except IntegrityError:  # started by a concurrent call (on another session) since the check
            raise TurnExists(f"turn {turn_id} exists") from None
        return self.get(tenant, turn_id)

    def resume(self, tenant: str, turn_id: str, owner: str) -> TurnRecord:
        """Take over a turn whose owner is gone (to continue it after an approval): it runs again under `owner`."""
        with self.sessions.begin() as s:
            turn = self._turn(s, tenant, turn_id, lock=True)
            session = s.get(AgentSession, (tenant, turn.session_id), with_for_update=True)
            if session.active_turn not in (None, turn_id):
                self._check_idle(s, session)
            if turn.status in TURN_ACTIVE and not self._stale(turn) and turn.owner != owner:
                raise TurnActive(f"turn {turn_id} runs elsewhere ({turn.owner})")
            turn.status, turn.owner, turn.heartbeat_at, turn.ended_at = RUNNING, owner, utcnow(), None
            turn.stop_reason, turn.error = None, None
            session.active_turn = turn_id
        return self.get(tenant, turn_id)

    def orphans(self, limit: int = 16) -> list[TurnRecord]:
        """Active turns whose runtime stopped renewing them (through an index): any runtime may adopt them."""
        with self.sessions() as s:
            return list(s.scalars(select(TurnRecord).where(TurnRecord.status.in_(TURN_ACTIVE),
                                                           TurnRecord.heartbeat_at < utcnow() - self.stale_after)
                                  .order_by(TurnRecord.heartbeat_at).limit(limit)))

    def get(self, tenant: str, turn_id: str) -> TurnRecord:
        with self.sessions() as s:
            return self._turn(s, tenant, turn_id)

    def list(self, tenant: str, session_id: str, limit: int = 20) -> list[TurnRecord]:
        with self.sessions() as s:
            return list(s.scalars(select(TurnRecord)
                                  .where(TurnRecord.tenant == tenant, TurnRecord.session_id == session_id)
                                  .order_by(TurnRecord.created_at.desc()).limit(limit)))

    def heartbeat(self, tenant: str, turn_id: str, owner: str, status: str | None = None) -> bool:
        """Renew the turn (and set its status); returns whether a cancel was asked for."""
        values: dict[str, Any] = {"heartbeat_at": utcnow()}
        if status is not None:
            values["status"] = status
        with self.sessions.begin() as s:
            s.execute(update(TurnRecord).where(TurnRecord.tenant == tenant, TurnRecord.id == turn_id,
                                               TurnRecord.owner == owner, TurnRecord.status.in_(TURN_ACTIVE))
                      .values(**values))
            return bool(s.scalar(select(TurnRecord.cancel_requested)
                                 .where(TurnRecord.tenant == tenant, TurnRecord.id == turn_id)))

    def choose_mode(self, tenant: str, turn_id: str, mode: str, reason: str, via_job: bool) -> None:
        with self.sessions.begin() as s:
            s.execute(update(TurnRecord).where(TurnRecord.tenant == tenant, TurnRecord.id == turn_id)
                      .values(mode=mode, mode_reason=reason, via_job=via_job))

    def cancel(self, tenant: str, turn_id: str) -> TurnRecord:
        """Ask the turn to stop (its runner stops at the next token, tool or approval wait); an orphaned one ends
        cancelled at once."""
        with self.sessions.begin() as s:
            turn = self._turn(s, tenant, turn_id, lock=True)
            if turn.status in TURN_ACTIVE:
                turn.cancel_requested = True
        return self.get(tenant, turn_id)

    def finish(self, tenant: str, turn_id: str, owner: str | None, status: str, *, stop_reason: str | None = None,
               content: str = "", usage: dict[str, int] | None = None, error: str | None = None) -> bool:
        """End the turn if `owner` still owns it and it is active; returns whether it did."""
        with self.sessions.begin() as s:
            turn = s.get(TurnRecord, (tenant, turn_id), with_for_update=True)
            if turn is None or turn.status not in TURN_ACTIVE or turn.owner != owner:
                return False
            turn.status, turn.stop_reason, turn.content, turn.error = status, stop_reason, content, error
            turn.usage, turn.ended_at = dict(usage or turn.usage), utcnow()
            if status == CANCELLED:
                turn.cancel_requested = True
            session = s.get(AgentSession, (tenant, turn.session_id), with_for_update=True)
            if session.active_turn == turn_id:
                session.active_turn = None
        return True

    def add_events(self, tenant: str, turn_id: str, events: Sequence[tuple[int, str, dict[str, Any]]]) -> None:
        """Durable events (seq, kind, payload); the turn's next_event moves past them."""
        if not events:
            return
        with self.sessions.begin() as s:
            s.add_all(TurnEventRecord(tenant=tenant, turn_id=turn_id, seq=seq, kind=kind, payload=payload,
                                      created_at=utcnow()) for seq, kind, payload in events)
            s.execute(update(TurnRecord).where(TurnRecord.tenant == tenant, TurnRecord.id == turn_id)
                      .values(next_event=events[-1][0] + 1))

    def events(self, tenant: str, turn_id: str, after: int, limit: int = 500) -> list[TurnEventRecord]:
        with self.sessions() as s:
            self._turn(s, tenant, turn_id)
            return list(s.scalars(select(TurnEventRecord).where(TurnEventRecord.tenant == tenant,
                                                                TurnEventRecord.turn_id == turn_id,
                                                                TurnEventRecord.seq > after)
                                  .order_by(TurnEventRecord.seq).limit(limit)))

    def _check_idle(self, s, session: AgentSession) -> None:
        if session.active_turn is None:
            return
        active = s.get(TurnRecord, (session.tenant, session.active_turn), with_for_update=True)
        if active is None or active.status not in TURN_ACTIVE:
            return
        if not self._stale(active):
            raise TurnActive(f"agent session {session.id} runs turn {active.id}; wait for it, attach or cancel it")
        active.status, active.ended_at = TURN_INTERRUPTED, utcnow()
        active.error = "its runtime stopped while it ran"

    def orphaned(self, turn: TurnRecord) -> bool:
        """Active, but its runtime stopped renewing it: a runtime will adopt it, or a new turn interrupts it."""
        return turn.status in TURN_ACTIVE and self._stale(turn)

    def _stale(self, turn: TurnRecord) -> bool:
        return utcnow() - turn.heartbeat_at > self.stale_after

    @staticmethod
    def _turn(s, tenant: str, turn_id: str, lock: bool = False) -> TurnRecord:
        turn = s.get(TurnRecord, (tenant, turn_id), with_for_update=lock)
        if turn is None:
            raise TurnNotFound(f"no turn {turn_id}")
        return turn
