"""The agent runtime's tables. The transcript is the source of truth: one append-only row per message, tool call and
tool result, keyed by (session, seq), so a turn writes only its new rows and reads only what it needs (the open tool
calls of the last step, the tail), never the whole history. A fork shares its parent's rows below its fork point
instead of copying them. Steps record the worker commit that holds each one (what a fork starts from); turns record
their mode, reason, status and the events a detached caller reattaches to.

Every table is keyed by tenant first: session and turn IDs are each tenant's own names, so one tenant's IDs neither
collide with nor reveal another's, and every lookup names its tenant (the primary key's leading column)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, ForeignKeyConstraint, Index, Integer, PrimaryKeyConstraint, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from foundation.sql import JSONType, Text, Timestamp, utcnow

# Transcript entry kinds.
USER, ASSISTANT, TOOL_CALL, TOOL_RESULT, SYSTEM_NOTE = "user", "assistant", "tool_call", "tool_result", "note"
# A tool call's life: started then finished or interrupted; a tool that needs approval waits first (awaiting), then
# is approved (and started) or rejected (and finished with a result saying so).
STARTED, FINISHED, INTERRUPTED = "started", "finished", "interrupted"
AWAITING, APPROVED, REJECTED = "awaiting", "approved", "rejected"
OPEN_CALL = (STARTED, AWAITING, APPROVED, REJECTED)
# A turn's life.
RUNNING, AWAITING_APPROVAL = "running", "awaiting_approval"
DONE, FAILED, CANCELLED, TURN_INTERRUPTED = "done", "failed", "cancelled", "interrupted"
TURN_ACTIVE = (RUNNING, AWAITING_APPROVAL)
ID = BigInteger().with_variant(Integer, "sqlite")
TENANT_CHARS = 256  # room for foundation.tenancy.MAX_TENANT_CHARS
ID_CHARS = 128  # foundation.ids.MAX_ID_CHARS: session, turn and tool call IDs


MEMORY_NAMESPACE_CHARS = TENANT_CHARS + 1 + ID_CHARS
KEY_CHARS = 640  # tenant/session/step/call


class Base(DeclarativeBase):
    pass


def _session_key(table: str) -> ForeignKeyConstraint:
    """A row's agent session: the same tenant's, its rows deleted with it."""
    return ForeignKeyConstraint(["tenant", "session_id"], ["agent_sessions.tenant", "agent_sessions.id"],
                                ondelete="CASCADE", name=f"fk_{table}_session")


class AgentSession(Base):
    __tablename__ = "agent_sessions"

    tenant: Mapped[str] = mapped_column(String(TENANT_CHARS))
    id: Mapped[str] = mapped_column(String(ID_CHARS))
    system_prompt: Mapped[str] = mapped_column(Text, default="")
    tools: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)  # OpenAI tool objects
    worker_session_id: Mapped[str | None] = mapped_column(String(128), nullable=True)  # the compressed KV
    worker_commit: Mapped[int | None] = mapped_column(ID, nullable=True)
    worker_address: Mapped[str | None] = mapped_column(String(256), nullable=True)  # the worker that serves it
    think_max: Mapped[bool] = mapped_column(default=False)
    next_seq: Mapped[int] = mapped_column(ID, default=0)
    steps: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # tool calls that ended in an error, so far
    # A fork reads its parent's rows with seq < fork_seq (the parent's are kept while a fork needs them).
    parent_id: Mapped[str | None] = mapped_column(String(ID_CHARS), nullable=True)  # the same tenant's
    fork_seq: Mapped[int | None] = mapped_column(ID, nullable=True)
    active_turn: Mapped[str | None] = mapped_column(String(ID_CHARS), nullable=True)  # one running turn at a time
    deleted: Mapped[bool] = mapped_column(default=False)  # gone for callers; rows kept while forks read them
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)

    __table_args__ = (PrimaryKeyConstraint("tenant", "id", name="pk_agent_sessions"),
                      ForeignKeyConstraint(["tenant", "parent_id"], ["agent_sessions.tenant", "agent_sessions.id"],
                                           name="fk_agent_sessions_parent"),
                      Index("ix_agent_sessions_parent", "tenant", "parent_id"))


class TranscriptEntry(Base):
    __tablename__ = "transcript"

    tenant: Mapped[str] = mapped_column(String(TENANT_CHARS))
    session_id: Mapped[str] = mapped_column(String(ID_CHARS))
    seq: Mapped[int] = mapped_column(ID)
    kind: Mapped[str] = mapped_column(String(16))
    step: Mapped[int] = mapped_column(Integer)  # the model step (one generation) it belongs to
    content: Mapped[str] = mapped_column(Text, default="")
    reasoning: Mapped[str | None] = mapped_column(Text, nullable=True)
    tool_call_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    tool_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    arguments: Mapped[Any] = mapped_column(JSONType, nullable=True)
    call_status: Mapped[str | None] = mapped_column(String(16), nullable=True)  # tool calls: started, finished...
    idempotency_key: Mapped[str | None] = mapped_column(String(KEY_CHARS), nullable=True)  # loop.idempotency_key
    is_error: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)

    # Unfinished tool calls, and one step's entries, are found without scanning the transcript.
    __table_args__ = (PrimaryKeyConstraint("tenant", "session_id", "seq", name="pk_transcript"),
                      _session_key("transcript"),
                      Index("ix_transcript_open_calls", "tenant", "session_id", "call_status"),
                      Index("ix_transcript_step", "tenant", "session_id", "step"))


class StepRecord(Base):
    """One model step: the worker session and commit that hold it (a fork at this step starts there)."""

    __tablename__ = "steps"

    tenant: Mapped[str] = mapped_column(String(TENANT_CHARS))
    session_id: Mapped[str] = mapped_column(String(ID_CHARS))
    step: Mapped[int] = mapped_column(Integer)
    turn_id: Mapped[str | None] = mapped_column(String(ID_CHARS), nullable=True)
    mode: Mapped[str] = mapped_column(String(16))
    worker_session_id: Mapped[str] = mapped_column(String(128))
    worker_commit: Mapped[int] = mapped_column(ID)
    first_seq: Mapped[int] = mapped_column(ID)  # the step's first transcript entry
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)

    __table_args__ = (PrimaryKeyConstraint("tenant", "session_id", "step", name="pk_steps"), _session_key("steps"))


class TurnRecord(Base):
    """A turn: the mode it runs in and why, its status and result. `owner` (a runtime process) renews heartbeat_at
    while it runs; a turn whose heartbeat is stale was orphaned by a crash and ends interrupted."""

    __tablename__ = "turns"

    tenant: Mapped[str] = mapped_column(String(TENANT_CHARS))
    id: Mapped[str] = mapped_column(String(ID_CHARS))
    session_id: Mapped[str] = mapped_column(String(ID_CHARS))
    status: Mapped[str] = mapped_column(String(24))
    mode: Mapped[str | None] = mapped_column(String(16), nullable=True)
    mode_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    via_job: Mapped[bool] = mapped_column(default=False)
    stop_reason: Mapped[str | None] = mapped_column(String(24), nullable=True)  # answer, step_limit, cancelled...
    content: Mapped[str] = mapped_column(Text, default="")
    usage: Mapped[dict[str, int]] = mapped_column(JSONType, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    next_event: Mapped[int] = mapped_column(ID, default=0)
    first_step: Mapped[int] = mapped_column(Integer, default=1)  # the session's step its first model step is
    request: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # what a continuation needs
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)

    # A session's turns newest first; active turns whose heartbeat went stale (orphans to adopt).
    __table_args__ = (PrimaryKeyConstraint("tenant", "id", name="pk_turns"), _session_key("turns"),
                      Index("ix_turns_session", "tenant", "session_id", "created_at"),
                      Index("ix_turns_active", "status", "heartbeat_at"))


class TurnEventRecord(Base):
    """A turn's durable events (mode chosen, steps, tool calls, approvals, job status, the end), by seq. Text deltas
    are not stored (the transcript has the text): their seqs are gaps here."""

    __tablename__ = "turn_events"

    tenant: Mapped[str] = mapped_column(String(TENANT_CHARS))
    turn_id: Mapped[str] = mapped_column(String(ID_CHARS))
    seq: Mapped[int] = mapped_column(ID)
    kind: Mapped[str] = mapped_column(String(24))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)

    __table_args__ = (PrimaryKeyConstraint("tenant", "turn_id", "seq", name="pk_turn_events"),
                      ForeignKeyConstraint(["tenant", "turn_id"], ["turns.tenant", "turns.id"], ondelete="CASCADE",
                                           name="fk_turn_events_turn"))


class MemoryItem(Base):
    """The key-value memory tool's values, one namespace per agent session: they outlive the runtime process."""

    __tablename__ = "agent_memory"

    namespace: Mapped[str] = mapped_column(String(MEMORY_NAMESPACE_CHARS), primary_key=True)  # tenant/session
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class TurnWebhook(Base):
    """A turn's webhook events (it ended, failed, waits for approval), each delivered to the turn's URL by whichever
    runtime claims it first: claims are updates on the row (`attempts`, `next_at`), so none is sent twice at once and
    one whose runtime died is taken over once its hold lapses."""

    __tablename__ = "turn_webhooks"

    tenant: Mapped[str] = mapped_column(String(TENANT_CHARS))
    event_id: Mapped[str] = mapped_column(String(ID_CHARS + 32))  # the webhook-id every attempt carries
    turn_id: Mapped[str] = mapped_column(String(ID_CHARS))
    url: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)  # the signed bytes, as JSON text
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)

    __table_args__ = (PrimaryKeyConstraint("tenant", "event_id", name="pk_turn_webhooks"),
                      Index("ix_turn_webhooks_due", "delivered_at", "next_at"))


class WebhookSecret(Base):
    """A tenant's turn-webhook signing secret (foundation/webhooks/secrets.py)."""

    __tablename__ = "turn_webhook_secrets"

    tenant: Mapped[str] = mapped_column(String(TENANT_CHARS), primary_key=True)
    secret: Mapped[str] = mapped_column(Text)
    previous_secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    previous_until: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    rotated_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
