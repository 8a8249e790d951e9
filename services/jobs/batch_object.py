"""What callers see of a batch: OpenAI's Batch object (the data of its webhook event too: jobs/webhooks.py)."""

from __future__ import annotations

from typing import Any

from services.jobs.job_store import JobStore
from services.jobs.tables import Batch


def batch_object(store: JobStore, batch: Batch) -> dict[str, Any]:
    """OpenAI's Batch object, plus the requests' counts by status."""
    counts = store.counts(batch.id)

    def stamp(value) -> int | None:
        return int(value.timestamp()) if value is not None else None

    return {
        "id": batch.id, "object": "batch", "endpoint": batch.endpoint, "status": batch.status,
        "completion_window": f"{batch.completion_window_s // 3600}h" if batch.completion_window_s % 3600 == 0
        else f"{batch.completion_window_s}s",
        "errors": {"object": "list", "data": [{"code": "invalid_request", "line": e["line"],
                                               "message": e["message"]} for e in batch.invalid_lines]}
        if batch.invalid_lines else None,
        "request_counts": {"total": batch.total, "completed": batch.completed, "failed": batch.failed},
        "requests_by_status": counts,
        "metadata": batch.metadata_ or None,
        **{f"{name}_at": stamp(getattr(batch, f"{name}_at")) for name in (
            "created", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled")},
        "expires_at": stamp(batch.expires_at),
    }
