"""The jobs service as its callers see it: submit a JSONL batch (or parsed requests) and publish it, read a batch as
OpenAI's Batch object, stream its results as OpenAI's batch output lines, cancel it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from opentelemetry import propagate

from model_worker.sessions.blobs import BlobStore
from services.jobs.celery_app import announce_webhooks, publish
from services.jobs.metrics import SubmitMetrics
from services.jobs.models import Batch, Result
from services.jobs.service import JobStore
from services.jobs.spec import BatchLimits, InvalidLine, JobRequest, parse_jsonl
from services.jobs.views import batch_view


class Jobs:
    def __init__(self, store: JobStore, outputs: BlobStore | None = None, completion_window_s: int = 24 * 3600,
                 metrics: SubmitMetrics | None = None, limits: BatchLimits = BatchLimits()) -> None:
        self.store, self.outputs, self.completion_window_s, self.limits = store, outputs, completion_window_s, limits
        self.metrics = metrics or SubmitMetrics()

    def submit_jsonl(self, tenant: str, text: str, *, completion_window_s: int | None = None,
                     metadata: dict[str, str] | None = None, webhook_url: str | None = None,
                     interactive: bool = False) -> dict[str, Any]:
        """Validate every line, store the valid requests and publish them; invalid lines are reported in the
        batch's errors with their line numbers. A batch past its bounds is refused whole (BatchTooLarge)."""
        valid, invalid = parse_jsonl(text, self.limits)
        return self.submit(tenant, valid, invalid, completion_window_s=completion_window_s, metadata=metadata,
                           webhook_url=webhook_url, interactive=interactive)

    def submit(self, tenant: str, valid: list[tuple[int, JobRequest]], invalid: list[InvalidLine], *,
               completion_window_s: int | None = None, metadata: dict[str, str] | None = None,
               webhook_url: str | None = None, interactive: bool = False) -> dict[str, Any]:
        """Store validated requests (and the invalid ones' reasons) as a batch and publish them."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier)  # the batch keeps the submitter's trace for the requests the reaper publishes again
        batch, to_publish = self.store.submit(tenant, valid, invalid, completion_window_s or self.completion_window_s,
                                              metadata, webhook_url, carrier)
        publish(to_publish, interactive=interactive)
        if webhook_url and not to_publish:  # no valid line: the batch ended failed as it came, its webhook is due
            announce_webhooks()
        self.metrics.submitted(len(valid), len(invalid), interactive)
        return self.view(batch)

    def get(self, tenant: str, batch_id: str) -> dict[str, Any]:
        return self.view(self.store.get(tenant, batch_id))

    def cancel(self, tenant: str, batch_id: str) -> dict[str, Any]:
        return self.view(self.store.cancel(tenant, batch_id))

    def results(self, tenant: str, batch_id: str) -> Iterator[dict[str, Any]]:
        """OpenAI batch output lines, in input order; a cancelled request's partial output is in its response."""
        for request, result in self.store.results(tenant, batch_id):
            response = self.response(result)
            yield {"id": f"batch_req_{request.id}", "custom_id": request.custom_id,
                   "response": None if response is None else {"status_code": 200, "request_id": response.get("id"),
                                                              "body": response},
                   "error": result.error}

    def response(self, result: Result) -> dict[str, Any] | None:
        if result.output_ref and self.outputs is not None:  # stored outside the row (over the inline limit)
            return json.loads(self.outputs.get(result.output_ref))
        return result.response

    def view(self, batch: Batch) -> dict[str, Any]:
        return batch_view(self.store, batch)
