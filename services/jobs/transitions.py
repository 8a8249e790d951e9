"""What every transition of the batch store does inside its transaction (services/jobs/job_store.py): lock the batch
row (always before request rows), end a request with its one result and usage row and the batch's counts, and end
the batch once no request is left; and the forms a request's end takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.jobs.tables import (
    BATCH_DONE,
    CANCELLED,
    CANCELLING,
    COMPLETED,
    EXPIRED,
    FAILED,
    QUEUED,
    RUNNING,
    Batch,
    BatchRequest,
    Result,
    UsageLedger,
    utcnow,
)

USAGE_FIELDS = ("prompt_tokens", "prefilled_tokens", "reused_tokens", "completion_tokens", "reasoning_tokens")


class BatchNotFound(LookupError):
    """No such batch for this tenant (NOT_FOUND)."""


@dataclass
class Outcome:
    """How a request ended: its status, the response or error, and what it cost."""

    status: str  # completed, failed, cancelled, expired
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    usage: dict[str, int] | None = None
    output_ref: str | None = None


def lock_batch(s: Session, batch_id: str, tenant: str | None = None) -> Batch:
    """The batch row, locked until the transaction ends (the tenant's only, when one is named)."""
    batch = s.get(Batch, batch_id, with_for_update=True)
    if batch is None or (tenant is not None and batch.tenant != tenant):
        raise BatchNotFound(f"no batch {batch_id}")
    return batch


def end_request(s: Session, batch: Batch, request: BatchRequest, outcome: Outcome) -> None:
    """The request's end: its status, its one result and usage row, the batch's counts."""
    now = utcnow()
    request.status, request.phase, request.finished_at = outcome.status, "done", now
    request.lease_owner, request.lease_expires_at = None, None
    s.add(Result(request_id=request.id, batch_id=batch.id, custom_id=request.custom_id, status=outcome.status,
                 response=outcome.response, error=outcome.error, output_ref=outcome.output_ref, created_at=now))
    usage = outcome.usage or {}
    s.add(UsageLedger(tenant=batch.tenant, batch_id=batch.id, custom_id=request.custom_id, recorded_at=now,
                      **{name: int(usage.get(name, 0)) for name in USAGE_FIELDS}))
    if outcome.status == COMPLETED:
        batch.completed += 1
    elif outcome.status == FAILED:
        batch.failed += 1
    s.flush()


def finalize(s: Session, batch: Batch) -> None:
    """Once no request is queued or running, the batch ends: cancelled, expired or completed."""
    if batch.status in BATCH_DONE:
        return
    left = s.scalar(select(func.count()).where(BatchRequest.batch_id == batch.id,
                                               BatchRequest.status.in_((QUEUED, RUNNING))))
    if left:
        return
    now = utcnow()
    if batch.status == CANCELLING:
        batch.status, batch.cancelled_at = CANCELLED, now
        return
    expired = s.scalar(select(func.count()).where(BatchRequest.batch_id == batch.id,
                                                  BatchRequest.status == EXPIRED))
    batch.finalizing_at = now
    if expired:
        batch.status, batch.expired_at = EXPIRED, now
    else:
        batch.status, batch.completed_at = COMPLETED, now


def attempts_spent(request: BatchRequest) -> Outcome:
    """How a request that failed every attempt it may have ends: failed, with the last attempt's error (none was
    recorded when its worker process died)."""
    last = request.last_error or {"code": "worker_lost", "message": "the process running it stopped"}
    tries = request.attempts - request.handed_back
    return Outcome(FAILED, error={"code": "attempts_exhausted",
                                  "message": f"failed {tries} attempts; the last: {last['code']}: {last['message']}"})
