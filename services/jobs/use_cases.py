"""The jobs service as its callers see it: submit a JSONL batch (or parsed requests) and publish it, read a batch as
OpenAI's Batch object, stream its results as OpenAI's batch output lines, cancel it.

The use cases know the broker only as a `Publisher`: the Celery app (services/jobs/celery_app.py, `CeleryPublisher`)
is wired in by whoever builds them (the service's process, the CLI), so this module does not import Celery."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from opentelemetry import propagate

from foundation.blobs import BlobStore
from services.jobs.batch_object import batch_object
from services.jobs.job_store import JobStore
from services.jobs.metrics import SubmitMetrics
from services.jobs.spec import BatchLimits, InvalidLine, JobRequest, parse_jsonl
from services.jobs.tables import Batch, Result


class Publisher(Protocol):
    """Where stored requests go to be run, and who is told that a batch's webhook is due."""

    def publish(self, requests: Iterable[tuple[int, str]], interactive: bool = False) -> None:
        """One message per (request id, queue) pair; `interactive` ones ahead of the rest."""

    def announce_webhooks(self) -> int:
        """A delivery for every batch whose webhook is due; returns how many."""


class Jobs:
    def __init__(self, store: JobStore, publisher: Publisher, outputs: BlobStore | None = None,
                 completion_window_s: int = 24 * 3600, metrics: SubmitMetrics | None = None,
                 limits: BatchLimits = BatchLimits()) -> None:
        self.store, self.publisher, self.outputs = store, publisher, outputs
        self.completion_window_s, self.limits = completion_window_s, limits
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
        self.publisher.publish(to_publish, interactive=interactive)
        if webhook_url and not to_publish:  # no valid line: the batch ended failed as it came, its webhook is due
            self.publisher.announce_webhooks()
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
        return batch_object(self.store, batch)
