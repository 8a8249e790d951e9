"""What callers see of a batch: OpenAI's Batch object; and its webhook, POSTed when it ends."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from services.jobs.models import Batch
from services.jobs.service import JobStore


def batch_view(store: JobStore, batch: Batch) -> dict[str, Any]:
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


def deliver_webhooks(store: JobStore, timeout_s: float = 10.0) -> int:
    """POST each ended batch ({"type": "batch.<status>", "data": its Batch object}) to its webhook URL: at least
    once, retried with backoff until a 2xx answer. Returns how many were delivered."""
    delivered = 0
    for batch_id in store.webhooks_due():
        batch = store.get_any(batch_id)
        body = json.dumps({"type": f"batch.{batch.status}", "data": batch_view(store, batch)}).encode()
        request = urllib.request.Request(batch.webhook_url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "dsv4-jobs"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as answer:
                ok = 200 <= answer.status < 300
        except (urllib.error.URLError, OSError, ValueError):
            ok = False
        store.webhook_result(batch_id, ok)
        delivered += ok
    return delivered
