"""Agent sessions and their transcripts in SQL. A step (one generation and the tool calls it made) is appended in one
transaction, and a tool result in another as it arrives, so a crash leaves at most the calls of one step open.
Nothing here reads the transcript whole: a turn reads the open calls (an index) and pages of the tail on demand, and
`stats` counts the rows read and written, so tests can assert that a turn's work does not grow with the history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from agent_runtime.store.models import (
    FINISHED,
    STARTED,
    TOOL_CALL,
    TOOL_RESULT,
    AgentSession,
    TranscriptEntry,
)
from services.sql import migrate, utcnow

MIGRATIONS = Path(__file__).parent / "migrations"


class AgentSessionNotFound(LookupError):
    """No such agent session for this tenant (NOT_FOUND)."""


@dataclass
class Entry:
    """A transcript entry to append (seq and step are assigned)."""

    kind: str
    content: str = ""
    reasoning: str | None = None
    tool_call_id: str | None = None
    tool_name: str | None = None
    arguments: Any = None
    idempotency_key: str | None = None
    is_error: bool = False


@dataclass
class StoreStats:
    rows_read: int = 0
    rows_written: int = 0
    by_operation: dict[str, int] = field(default_factory=dict)


def upgrade(url: str) -> None:
    migrate(url, MIGRATIONS)


class TranscriptStore:
    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions
        self.stats = StoreStats()

    def _count(self, operation: str, read: int = 0, written: int = 0) -> None:
        self.stats.rows_read += read
        self.stats.rows_written += written
        self.stats.by_operation[operation] = self.stats.by_operation.get(operation, 0) + 1

    def create(self, tenant: str, session_id: str, system_prompt: str = "", tools: Sequence[dict] = (),
               worker_session_id: str | None = None, think_max: bool = False, parent: str | None = None
               ) -> AgentSession:
        session = AgentSession(id=session_id, tenant=tenant, system_prompt=system_prompt, tools=list(tools),
                               worker_session_id=worker_session_id, think_max=think_max, next_seq=0, steps=0,
                               failures=0,
                               parent=parent, created_at=utcnow(), updated_at=utcnow())
        with self.sessions.begin() as s:
            s.add(session)
        self._count("create", written=1)
        return session

    def get(self, tenant: str, session_id: str) -> AgentSession:
        with self.sessions() as s:
            session = s.get(AgentSession, session_id)
        self._count("get", read=1)
        if session is None or session.tenant != tenant:
            raise AgentSessionNotFound(f"no agent session {session_id}")
        return session

    def append_step(self, tenant: str, session_id: str, entries: Sequence[Entry], *, new_step: bool = True,
                    worker_session_id: str | None = None, worker_commit: int | None = None) -> list[int]:
        """Append entries (a step's input, its reply and the calls it made, started) in one transaction, with the
        worker session's commit that holds them; returns their seqs."""
        with self.sessions.begin() as s:
            session = self._lock(s, tenant, session_id)
            step = session.steps + (1 if new_step else 0)
            seqs = list(range(session.next_seq, session.next_seq + len(entries)))
            s.add_all(TranscriptEntry(session_id=session_id, seq=seq, step=step, created_at=utcnow(),
                                      call_status=STARTED if e.kind == TOOL_CALL else None, **vars(e))
                      for seq, e in zip(seqs, entries))
            session.next_seq += len(entries)
            session.steps, session.updated_at = step, utcnow()
            if worker_session_id is not None:
                session.worker_session_id = worker_session_id
            if worker_commit is not None:
                session.worker_commit = worker_commit
        self._count("append_step", read=1, written=len(entries) + 1)
        return seqs

    def finish_call(self, tenant: str, session_id: str, call_id: str, result: Entry,
                    status: str = FINISHED) -> int:
        """The result of a started call: appended, and the call marked finished (or interrupted), together."""
        with self.sessions.begin() as s:
            session = self._lock(s, tenant, session_id)
            seq = session.next_seq
            s.add(TranscriptEntry(session_id=session_id, seq=seq, step=session.steps, created_at=utcnow(),
                                  **{**vars(result), "kind": TOOL_RESULT, "tool_call_id": call_id}))
            s.execute(update(TranscriptEntry).where(
                TranscriptEntry.session_id == session_id, TranscriptEntry.tool_call_id == call_id,
                TranscriptEntry.kind == TOOL_CALL, TranscriptEntry.call_status == STARTED)
                .values(call_status=status))
            session.next_seq, session.updated_at = seq + 1, utcnow()
            session.failures += result.is_error
        self._count("finish_call", read=1, written=3)
        return seq

    def open_calls(self, session_id: str) -> list[TranscriptEntry]:
        """Tool calls started and not finished: after a crash, the ones to re-run (idempotent tools) or to answer
        as interrupted. Found through an index, whatever the transcript's length."""
        with self.sessions() as s:
            rows = list(s.scalars(select(TranscriptEntry).where(TranscriptEntry.session_id == session_id,
                                                                TranscriptEntry.call_status == STARTED)
                                  .order_by(TranscriptEntry.seq)))
        self._count("open_calls", read=len(rows))
        return rows

    def step_entries(self, session_id: str, step: int) -> list[TranscriptEntry]:
        """One step's entries (through an index), in order."""
        with self.sessions() as s:
            rows = list(s.scalars(select(TranscriptEntry).where(TranscriptEntry.session_id == session_id,
                                                                TranscriptEntry.step == step)
                                  .order_by(TranscriptEntry.seq)))
        self._count("step_entries", read=len(rows))
        return rows

    def set_worker(self, tenant: str, session_id: str, worker_session_id: str, worker_commit: int) -> None:
        with self.sessions.begin() as s:
            session = self._lock(s, tenant, session_id)
            session.worker_session_id, session.worker_commit = worker_session_id, worker_commit
        self._count("set_worker", read=1, written=1)

    def page(self, session_id: str, before: int | None = None, limit: int = 100) -> list[TranscriptEntry]:
        """Entries before `before` (the end when None), newest last: the tail, read in pages."""
        with self.sessions() as s:
            query = select(TranscriptEntry).where(TranscriptEntry.session_id == session_id)
            if before is not None:
                query = query.where(TranscriptEntry.seq < before)
            rows = list(s.scalars(query.order_by(TranscriptEntry.seq.desc()).limit(limit)))
        self._count("page", read=len(rows))
        return rows[::-1]

    def _lock(self, s: Session, tenant: str, session_id: str) -> AgentSession:
        session = s.get(AgentSession, session_id, with_for_update=True)
        if session is None or session.tenant != tenant:
            raise AgentSessionNotFound(f"no agent session {session_id}")
        return session

