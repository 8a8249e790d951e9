"""The agent runtime's tables. The transcript is the source of truth: one append-only row per message, tool call and
tool result, keyed by (session, seq), so a turn writes only its new rows and reads only what it needs (the open tool
calls of the last step, the tail), never the whole history."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.sql import JSONType, Timestamp, utcnow

# Transcript entry kinds.
USER, ASSISTANT, TOOL_CALL, TOOL_RESULT, SYSTEM_NOTE = "user", "assistant", "tool_call", "tool_result", "note"
# A tool call's life.
STARTED, FINISHED, INTERRUPTED = "started", "finished", "interrupted"


class Base(DeclarativeBase):
    pass


class AgentSession(Base):
    __tablename__ = "agent_sessions"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    system_prompt: Mapped[str] = mapped_column(Text, default="")
    tools: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)  # OpenAI tool objects
    worker_session_id: Mapped[str | None] = mapped_column(String(128), nullable=True)  # the compressed KV
    worker_commit: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), nullable=True)
    think_max: Mapped[bool] = mapped_column(default=False)
    next_seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), default=0)
    steps: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # tool calls that ended in an error, so far
    parent: Mapped[str | None] = mapped_column(String(160), nullable=True)  # "session@seq" it was forked from
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class TranscriptEntry(Base):
    __tablename__ = "transcript"

    session_id: Mapped[str] = mapped_column(ForeignKey("agent_sessions.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    step: Mapped[int] = mapped_column(Integer)  # the model step (one generation) it belongs to
    content: Mapped[str] = mapped_column(Text, default="")
    reasoning: Mapped[str | None] = mapped_column(Text, nullable=True)
    tool_call_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    tool_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    arguments: Mapped[Any] = mapped_column(JSONType, nullable=True)
    call_status: Mapped[str | None] = mapped_column(String(16), nullable=True)  # tool calls: started, finished...
    idempotency_key: Mapped[str | None] = mapped_column(String(160), nullable=True)
    is_error: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)

    # Unfinished tool calls, and one step's entries, are found without scanning the transcript.
    __table_args__ = (Index("ix_transcript_open_calls", "session_id", "call_status"),
                      Index("ix_transcript_step", "session_id", "step"))
