"""The gateway's tables: stored responses (each one a commit of a persistent worker session, or a background Think
Max job) and uploaded files (bytes on disk, rows here). Alembic migrations in services/gateway/migrations."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from foundation.sql import JSONType, Text, Timestamp, migrate, utcnow

MIGRATIONS = Path(__file__).parent / "migrations"
ID = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    pass


class StoredResponse(Base):
    """One /v1/responses response. A stored one names the worker session and commit that hold its conversation, so
    a later request continues from it (in place if it is the session's newest commit, on a fork otherwise)."""

    __tablename__ = "gateway_responses"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16))  # queued, in_progress, completed, failed, cancelled, incomplete
    store: Mapped[bool] = mapped_column(default=True)
    background: Mapped[bool] = mapped_column(default=False)
    previous_response_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    worker_address: Mapped[str | None] = mapped_column(String(256), nullable=True)
    worker_session_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    worker_commit: Mapped[int | None] = mapped_column(ID, nullable=True)
    batch_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # a background response's job
    request: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    body: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # the Response object as last returned
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    completed_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)

    __table_args__ = (Index("ix_gateway_responses_tenant", "tenant", "created_at"),
                      Index("ix_gateway_responses_session", "tenant", "worker_session_id"))


class StoredFile(Base):
    """An uploaded file (purpose "batch": OpenAI batch-input JSONL) or a batch's output or error file."""

    __tablename__ = "gateway_files"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128))
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(512))
    bytes: Mapped[int] = mapped_column(ID)
    path: Mapped[str] = mapped_column(Text)  # under the gateway's files directory
    batch_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the batch an output file is of
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)

    __table_args__ = (Index("ix_gateway_files_tenant", "tenant", "created_at"),)


def upgrade(url: str) -> None:
    migrate(url, MIGRATIONS)
