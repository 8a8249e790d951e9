"""Agent sessions and their transcripts in SQL. A step (one generation and the tool calls it made) is appended in one
transaction, and a tool result in another as it arrives, so a crash leaves at most the calls of one step open.
Nothing here reads the transcript whole: a turn reads the open calls (an index) and pages of the tail on demand, and
`stats` counts the rows read and written, so tests can assert that a turn's work does not grow with the history
(the reads are in reads.py). A fork copies only the entries of the step it forks at; older rows are read from its
ancestors, below each fork point. Every read and write names its tenant: a session ID is the tenant's own name
(another tenant's session of the same name is another session, and its existence is never revealed)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from agent_runtime.store.errors import AgentSessionExists, AgentSessionNotFound, NotDecidable, ToolCallNotFound
from agent_runtime.store.reads import StoreStats, TranscriptReads
from agent_runtime.store.tables import (
    APPROVED,
    AWAITING,
    FINISHED,
    OPEN_CALL,
    REJECTED,
    STARTED,
    TOOL_CALL,
    TOOL_RESULT,
    AgentSession,
    StepRecord,
    TranscriptEntry,
)
from foundation.sql import migrate, utcnow

__all__ = ["AgentSessionExists", "AgentSessionNotFound", "Entry", "NotDecidable", "StoreStats", "ToolCallNotFound",
           "TranscriptStore", "upgrade"]

MIGRATIONS = Path(__file__).parent / "migrations"


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
    awaits_approval: bool = False  # tool calls: run only once approved


def upgrade(url: str) -> None:
    migrate(url, MIGRATIONS)


class TranscriptStore(TranscriptReads):
    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions
        self.stats = StoreStats()

    # -- sessions ------------------------------------------------------------------------------------------------

    def create(self, tenant: str, session_id: str, system_prompt: str = "", tools: Sequence[dict] = (),
               worker_session_id: str | None = None, think_max: bool = False) -> AgentSession:
        try:
            with self.sessions.begin() as s:
                if s.get(AgentSession, (tenant, session_id)) is not None:
                    raise AgentSessionExists(f"agent session {session_id} exists")
                s.add(AgentSession(id=session_id, tenant=tenant, system_prompt=system_prompt, tools=list(tools),
                                   worker_session_id=worker_session_id, think_max=think_max, next_seq=0, steps=0,
                                   failures=0, deleted=False, created_at=utcnow(), updated_at=utcnow()))
        except IntegrityError:  # created by a concurrent call since the check
            raise AgentSessionExists(f"agent session {session_id} exists") from None
        self._count("create", written=1)
        return self.get(tenant, session_id)

    def get(self, tenant: str, session_id: str) -> AgentSession:
        with self.sessions() as s:
            session = s.get(AgentSession, (tenant, session_id))
        self._count("get", read=1)
        if session is None or session.deleted:
            raise AgentSessionNotFound(f"no agent session {session_id}")
        return session

    def exists(self, tenant: str, session_id: str) -> bool:
        """Whether the tenant holds this ID (deleted sessions whose rows forks still read included)."""
        with self.sessions() as s:
            return s.get(AgentSession, (tenant, session_id)) is not None

    def list(self, tenant: str, limit: int, after: str | None = None) -> list[AgentSession]:
        with self.sessions() as s:
            query = select(AgentSession).where(AgentSession.tenant == tenant, AgentSession.deleted.is_(False))
            if after:
                query = query.where(AgentSession.id > after)
            rows = list(s.scalars(query.order_by(AgentSession.id).limit(limit)))
        self._count("list", read=len(rows))
        return rows

    def delete(self, tenant: str, session_id: str) -> None:
        """Gone for callers at once; its rows go when no fork reads them any more (then its dead ancestors' too)."""
        with self.sessions.begin() as s:
            self._lock(s, tenant, session_id).deleted = True
            current: str | None = session_id
            while current is not None:
                session = s.get(AgentSession, (tenant, current))
                children = s.scalar(select(exists().where(AgentSession.tenant == tenant,
                                                          AgentSession.parent_id == current)))
                if not session.deleted or children:
                    break
                current = session.parent_id
                s.delete(session)
                s.flush()
        self._count("delete", read=1, written=1)

    def fork(self, tenant: str, session_id: str, step: int, new_id: str, worker_session_id: str,
             worker_commit: int) -> AgentSession:
        """A new session whose history is `session_id`'s up to and including `step` (a committed step), on a
        worker session forked at that step's commit. Only the step's own entries are copied."""
        try:
            rows = self._fork(tenant, session_id, step, new_id, worker_session_id, worker_commit)
        except IntegrityError:  # created by a concurrent call since the check
            raise AgentSessionExists(f"agent session {new_id} exists") from None
        self._count("fork", read=len(rows) + 2, written=len(rows) + 2)
        return self.get(tenant, new_id)

    def _fork(self, tenant: str, session_id: str, step: int, new_id: str, worker_session_id: str,
              worker_commit: int) -> list[TranscriptEntry]:
        with self.sessions.begin() as s:
            parent = self._lock(s, tenant, session_id)
            if not 1 <= step <= parent.steps:
                raise ValueError(f"step: between 1 and {parent.steps}")
            if s.get(AgentSession, (tenant, new_id)) is not None:
                raise AgentSessionExists(f"agent session {new_id} exists")
            record = self._step_record(s, parent, step)
            rows = self._step_rows(s, parent, step)
            end = rows[-1].seq + 1 if rows else record.first_seq
            s.add(AgentSession(
                id=new_id, tenant=tenant, system_prompt=parent.system_prompt, tools=parent.tools,
                worker_session_id=worker_session_id, worker_commit=worker_commit, think_max=parent.think_max,
                next_seq=end, steps=step, failures=0, parent_id=parent.id, fork_seq=record.first_seq, deleted=False,
                created_at=utcnow(), updated_at=utcnow()))
            s.flush()
            s.add_all(TranscriptEntry(**{c: getattr(row, c) for c in _ENTRY_COLUMNS}, tenant=tenant,
                                      session_id=new_id) for row in rows)
            s.add(StepRecord(tenant=tenant, session_id=new_id, step=step, turn_id=None, mode=record.mode,
                             worker_session_id=worker_session_id, worker_commit=worker_commit,
                             first_seq=record.first_seq, created_at=utcnow()))
        return rows

    def step_record(self, tenant: str, session_id: str, step: int) -> StepRecord:
        with self.sessions() as s:
            record = self._step_record(s, self._visible(s, tenant, session_id), step)
        self._count("step_record", read=2)
        return record

    # -- appending -----------------------------------------------------------------------------------------------

    def append_step(self, tenant: str, session_id: str, entries: Sequence[Entry], *, worker_session_id: str,
                    worker_commit: int, mode: str = "", turn_id: str | None = None) -> list[int]:
        """Append a step (its input, its reply and the calls it made) in one transaction with the worker session's
        commit that holds it; returns the entries' seqs."""
        with self.sessions.begin() as s:
            session = self._lock(s, tenant, session_id)
            step = session.steps + 1
            seqs = list(range(session.next_seq, session.next_seq + len(entries)))
            s.add_all(_row(tenant, session_id, seq, step, e) for seq, e in zip(seqs, entries))
            s.add(StepRecord(tenant=tenant, session_id=session_id, step=step, turn_id=turn_id, mode=mode,
                             worker_session_id=worker_session_id, worker_commit=worker_commit,
                             first_seq=session.next_seq, created_at=utcnow()))
            session.next_seq += len(entries)
            session.steps, session.updated_at = step, utcnow()
            session.worker_session_id, session.worker_commit = worker_session_id, worker_commit
        self._count("append_step", read=1, written=len(entries) + 2)
        return seqs

    def append_note(self, tenant: str, session_id: str, entry: Entry) -> int:
        """An entry outside any model step (a compaction note): it belongs to the last step."""
        with self.sessions.begin() as s:
            session = self._lock(s, tenant, session_id)
            seq = session.next_seq
            s.add(_row(tenant, session_id, seq, session.steps, entry))
            session.next_seq, session.updated_at = seq + 1, utcnow()
        self._count("append_note", read=1, written=2)
        return seq

    def finish_call(self, tenant: str, session_id: str, call_id: str, result: Entry,
                    status: str = FINISHED) -> int:
        """The result of an open call: appended, and the call marked finished (or interrupted), together."""
        with self.sessions.begin() as s:
            session = self._lock(s, tenant, session_id)
            seq = session.next_seq
            s.add(_row(tenant, session_id, seq, session.steps, Entry(**{**vars(result), "kind": TOOL_RESULT,
                                                                         "tool_call_id": call_id})))
            s.execute(_open_call(tenant, session_id, call_id).values(call_status=status))
            session.next_seq, session.updated_at = seq + 1, utcnow()
            session.failures += result.is_error
        self._count("finish_call", read=1, written=3)
        return seq

    def set_calls(self, tenant: str, session_id: str, call_ids: Sequence[str], status: str) -> None:
        """Open calls to `status` (approved calls to started, just before they run)."""
        with self.sessions.begin() as s:
            s.execute(update(TranscriptEntry).where(
                TranscriptEntry.tenant == tenant, TranscriptEntry.session_id == session_id,
                TranscriptEntry.kind == TOOL_CALL,
                TranscriptEntry.tool_call_id.in_(list(call_ids)), TranscriptEntry.call_status.in_(OPEN_CALL))
                .values(call_status=status))
        self._count("set_calls", written=len(call_ids))

    def decide(self, tenant: str, session_id: str, call_id: str, approve: bool) -> int:
        """A human's decision on a call that awaits approval; returns the call's step."""
        with self.sessions.begin() as s:
            self._lock(s, tenant, session_id)
            call = s.execute(select(TranscriptEntry.step, TranscriptEntry.call_status).where(
                TranscriptEntry.tenant == tenant, TranscriptEntry.session_id == session_id,
                TranscriptEntry.tool_call_id == call_id, TranscriptEntry.kind == TOOL_CALL)
                .order_by(TranscriptEntry.seq.desc()).limit(1)).first()
            if call is None:
                raise ToolCallNotFound(f"no tool call {call_id} in agent session {session_id}")
            if call.call_status != AWAITING:
                raise NotDecidable(f"tool call {call_id} does not await approval")
            s.execute(_open_call(tenant, session_id, call_id, AWAITING).values(
                call_status=APPROVED if approve else REJECTED))
            step = call.step
        self._count("decide", read=2, written=1)
        return step

    def set_worker(self, tenant: str, session_id: str, worker_session_id: str, worker_commit: int,
                   worker_address: str | None = None) -> None:
        with self.sessions.begin() as s:
            session = self._lock(s, tenant, session_id)
            session.worker_session_id, session.worker_commit = worker_session_id, worker_commit
            if worker_address is not None:
                session.worker_address = worker_address
        self._count("set_worker", read=1, written=1)

    # -- helpers -------------------------------------------------------------------------------------------------

    def _lock(self, s: Session, tenant: str, session_id: str) -> AgentSession:
        session = s.get(AgentSession, (tenant, session_id), with_for_update=True)
        if session is None or session.deleted:
            raise AgentSessionNotFound(f"no agent session {session_id}")
        return session

    def _visible(self, s: Session, tenant: str, session_id: str) -> AgentSession:
        session = s.get(AgentSession, (tenant, session_id))
        if session is None or session.deleted:
            raise AgentSessionNotFound(f"no agent session {session_id}")
        return session

_ENTRY_COLUMNS = ("seq", "kind", "step", "content", "reasoning", "tool_call_id", "tool_name", "arguments",
                  "call_status", "idempotency_key", "is_error", "created_at")


def _row(tenant: str, session_id: str, seq: int, step: int, entry: Entry) -> TranscriptEntry:
    fields = {k: v for k, v in vars(entry).items() if k != "awaits_approval"}
    status = (AWAITING if entry.awaits_approval else STARTED) if entry.kind == TOOL_CALL else None
    return TranscriptEntry(tenant=tenant, session_id=session_id, seq=seq, step=step, created_at=utcnow(),
                           call_status=status, **fields)


def _open_call(tenant: str, session_id: str, call_id: str, status: str | None = None):
    statuses = [status] if status else list(OPEN_CALL)
    return update(TranscriptEntry).where(
        TranscriptEntry.tenant == tenant, TranscriptEntry.session_id == session_id,
        TranscriptEntry.tool_call_id == call_id, TranscriptEntry.kind == TOOL_CALL,
        TranscriptEntry.call_status.in_(statuses))
