"""The stored responses' rows: read tenant-scoped, written with the Response object they last returned."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from foundation.ids import check_id
from foundation.sql import utcnow
from services.gateway import errors
from services.gateway.state import Gateway
from services.gateway.store import StoredResponse

ENDED = ("completed", "incomplete", "failed", "cancelled")


async def load(gw: Gateway, tenant: str, response_id: str, param: str = "response_id") -> StoredResponse:
    check_id(response_id, param)
    def read() -> StoredResponse | None:
        with gw.db() as s:
            return s.scalar(select(StoredResponse).where(StoredResponse.id == response_id,
                                                         StoredResponse.tenant == tenant))

    row = await run_in_threadpool(read)
    if row is None:  # another tenant's is not found either
        raise errors.ApiError(404, f"no response {response_id!r}", param=param, code="response_not_found")
    return row


async def save(gw: Gateway, row: StoredResponse, response: dict[str, Any], **columns: Any) -> StoredResponse:
    await run_in_threadpool(write, gw, stamp(row, response, **columns))
    return row


def stamp(row: StoredResponse, response: dict[str, Any], **columns: Any) -> StoredResponse:
    for name, value in {**columns, "status": response["status"], "body": response}.items():
        setattr(row, name, value)
    row.completed_at = utcnow() if row.status in ENDED else None
    return row


def write(gw: Gateway, row: StoredResponse) -> None:
    with gw.db.begin() as s:
        s.merge(row)

