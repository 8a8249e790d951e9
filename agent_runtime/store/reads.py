"""Reading an agent session's transcript without reading it whole: the open calls (an index), one step's entries
(an index), pages of the tail; a fork's older rows from its ancestors, below each fork point. Every read names the
tenant whose session it is. `stats` counts the rows read and written, so tests can assert that a turn's database work
does not grow with the history."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from agent_runtime.store.tables import OPEN_CALL, AgentSession, StepRecord, TranscriptEntry


@dataclass
class StoreStats:
    rows_read: int = 0
    rows_written: int = 0
    by_operation: dict[str, int] = field(default_factory=dict)


class TranscriptReads:
    sessions: sessionmaker
    stats: StoreStats

    def _count(self, operation: str, read: int = 0, written: int = 0) -> None:
        self.stats.rows_read += read
        self.stats.rows_written += written
        self.stats.by_operation[operation] = self.stats.by_operation.get(operation, 0) + 1

    def open_calls(self, tenant: str, session_id: str) -> list[TranscriptEntry]:
        """Tool calls not finished: after a crash, the ones to re-run (idempotent tools) or to answer as
        interrupted, and those waiting on or decided by a human. Found through an index, whatever the length."""
        with self.sessions() as s:
            rows = list(s.scalars(select(TranscriptEntry).where(TranscriptEntry.tenant == tenant,
                                                                TranscriptEntry.session_id == session_id,
                                                                TranscriptEntry.call_status.in_(OPEN_CALL))
                                  .order_by(TranscriptEntry.seq)))
        self._count("open_calls", read=len(rows))
        return rows

    def step_entries(self, tenant: str, session_id: str, step: int) -> list[TranscriptEntry]:
        """One step's entries (through an index), in order; a fork's older steps from its ancestors."""
        with self.sessions() as s:
            rows = self._step_rows(s, s.get(AgentSession, (tenant, session_id)), step)
        self._count("step_entries", read=len(rows) + 1)
        return rows

    def page(self, tenant: str, session_id: str, before: int | None = None, limit: int = 100
             ) -> list[TranscriptEntry]:
        """Entries before `before` (the end when None), newest last: the tail, read in pages, through forks."""
        rows: list[TranscriptEntry] = []
        with self.sessions() as s:
            for owner, bound in self._lineage(s, s.get(AgentSession, (tenant, session_id))):
                upper = bound if before is None else min(bound, before) if bound is not None else before
                query = select(TranscriptEntry).where(TranscriptEntry.tenant == tenant,
                                                      TranscriptEntry.session_id == owner)
                if upper is not None:
                    query = query.where(TranscriptEntry.seq < upper)
                rows += s.scalars(query.order_by(TranscriptEntry.seq.desc()).limit(limit - len(rows)))
                if len(rows) >= limit:
                    break
        self._count("page", read=len(rows))
        return rows[::-1]

    @staticmethod
    def _lineage(s: Session, session: AgentSession) -> list[tuple[str, int | None]]:
        """(session, seq bound) from the session up through its ancestors: each reads its rows below the bound."""
        chain, bound = [], None
        while session is not None:
            chain.append((session.id, bound))
            bound = session.fork_seq if bound is None else min(bound, session.fork_seq or bound)
            session = s.get(AgentSession, (session.tenant, session.parent_id)) if session.parent_id else None
        return chain

    def _step_rows(self, s: Session, session: AgentSession, step: int) -> list[TranscriptEntry]:
        for owner, bound in self._lineage(s, session):
            query = select(TranscriptEntry).where(TranscriptEntry.tenant == session.tenant,
                                                  TranscriptEntry.session_id == owner, TranscriptEntry.step == step)
            if bound is not None:
                query = query.where(TranscriptEntry.seq < bound)
            rows = list(s.scalars(query.order_by(TranscriptEntry.seq)))
            if rows:
                return rows
        return []

    def _step_record(self, s: Session, session: AgentSession, step: int) -> StepRecord:
        for owner, _ in self._lineage(s, session):
            record = s.get(StepRecord, (session.tenant, owner, step))
            if record is not None:
                return record
        raise ValueError(f"step {step}: no record of it (steps before the runtime recorded them cannot be forked)")

