"""The jobs service's tables (SQLAlchemy 2.x). SQL is the source of truth: a request's status, lease and progress,
its one result and its one usage row; the broker only carries "run request N" messages, which may be lost or
duplicated without changing any outcome."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from foundation.sql import JSONType, Text, Timestamp, utcnow

# OpenAI Batch API statuses.
VALIDATING, IN_PROGRESS, FINALIZING, COMPLETED, FAILED, EXPIRED, CANCELLING, CANCELLED = (
    "validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled")
BATCH_DONE = (COMPLETED, FAILED, EXPIRED, CANCELLED)
# A request's own lifecycle.
QUEUED, RUNNING = "queued", "running"
REQUEST_DONE = (COMPLETED, FAILED, CANCELLED, EXPIRED)


class Base(DeclarativeBase):
    pass


class Batch(Base):
    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(16))
    endpoint: Mapped[str] = mapped_column(String(64), default="/v1/chat/completions")
    completion_window_s: Mapped[int] = mapped_column(Integer)
    total: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    invalid_lines: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)  # [{line, code, message}]
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSONType, default=dict)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    webhook_next_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    webhook_delivered_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    webhook_last_error: Mapped[str | None] = mapped_column(Text, nullable=True)  # why the last attempt failed
    trace_context: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)  # the submitter's W3C headers
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    in_progress_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    finalizing_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    completed_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    failed_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    expired_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    cancelling_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)

    __table_args__ = (Index("ix_batches_tenant_created", "tenant", "created_at", "id"),)


class BatchRequest(Base):
    """One request of a batch. Claimed with a lease: (lease_owner, lease_expires_at) while running; a reaper puts
    requests whose lease expired back in the queue."""

    __tablename__ = "batch_requests"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    custom_id: Mapped[str] = mapped_column(String(512))
    line: Mapped[int] = mapped_column(Integer)  # 1-based line of the input file (or index + 1)
    body: Mapped[dict[str, Any]] = mapped_column(JSONType)  # the validated request (jobs.spec.JobRequest)
    queue: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # claims, each a run of its own
    # Attempts given back because the model worker could not take them: they do not count against max_attempts.
    handed_back: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)  # the last failed attempt's
    phase: Mapped[str] = mapped_column(String(16), default=QUEUED)  # queued, prefill, decode, done
    tokens_so_far: Mapped[int] = mapped_column(Integer, default=0)
    enqueued_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)

    __table_args__ = (UniqueConstraint("batch_id", "custom_id", name="uq_request_custom_id"),
                      Index("ix_requests_batch_status", "batch_id", "status"),
                      Index("ix_requests_status_lease", "status", "lease_expires_at"))


class Result(Base):
    """The outcome of one request, written once: its response (or error) and, for outputs over the inline limit,
    the address of the output in the result store instead of the text."""

    __tablename__ = "results"

    request_id: Mapped[int] = mapped_column(ForeignKey("batch_requests.id", ondelete="CASCADE"), primary_key=True)
    batch_id: Mapped[str] = mapped_column(String(64), index=True)
    custom_id: Mapped[str] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(16))  # completed, failed, cancelled, expired
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    output_ref: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class UsageLedger(Base):
    """Exactly one row per (batch, custom_id): what the request cost, written in the same transaction as its
    result."""

    __tablename__ = "usage_ledger"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    batch_id: Mapped[str] = mapped_column(String(64))
    custom_id: Mapped[str] = mapped_column(String(512))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    prefilled_tokens: Mapped[int] = mapped_column(Integer, default=0)
    reused_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(Integer, default=0)
    recorded_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)

    __table_args__ = (UniqueConstraint("batch_id", "custom_id", name="uq_usage_custom_id"),)


class WebhookSecret(Base):
    """A tenant's webhook signing secret (made at random on first need), and the one it replaced, which still signs
    until `previous_until` so that receivers can switch."""

    __tablename__ = "webhook_secrets"

    tenant: Mapped[str] = mapped_column(String(128), primary_key=True)
    secret: Mapped[str] = mapped_column(Text)
    previous_secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    previous_until: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    rotated_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
