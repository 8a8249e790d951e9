"""Batch webhooks: when a batch ends, its event is POSTed to the batch's webhook URL by the `jobs.deliver_webhook`
task (services/jobs/celery_app.py), never inside a request's run. Each attempt is claimed in SQL first, goes only to
an address the allow-list lets it reach (checked after resolving, and connected to as checked), is signed with the
tenant's secret (Standard Webhooks) and bounded in time; a failed one is retried with exponential backoff up to
`webhook_max_attempts`, its reason kept on the batch (`webhook_last_error`)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import ssl
import time
from typing import Any

from foundation.webhooks.delivery import WebhookPolicy
from foundation.webhooks.destinations import Resolver, system_resolver
from foundation.webhooks.signing import signed_headers
from services.jobs.batch_object import batch_object
from services.jobs.job_store import JobStore
from services.jobs.tables import Batch
from services.jobs.webhook_store import WebhookStore

log = logging.getLogger(__name__)
# A claimed attempt is held this long past its own deadline before another worker may take it over (its worker
# died mid-attempt); long enough that a slow but live one has recorded its outcome by then.
HOLD_MARGIN_S = 60.0


class WebhookSender:
    def __init__(self, jobs: JobStore, hooks: WebhookStore, policy: WebhookPolicy,
                 resolve: Resolver = system_resolver, tls: ssl.SSLContext | None = None) -> None:
        """`resolve` and `tls` are the system's resolver and trust store unless given."""
        self.jobs, self.hooks, self.policy, self.resolve, self.tls = jobs, hooks, policy, resolve, tls

    def deliver(self, batch_id: str) -> str:
        """One attempt at the batch's webhook, if one is due: "delivered", "failed" (its reason recorded; tried
        again after its backoff while attempts are left) or "not due" (another worker holds it, or it is waiting,
        delivered or given up)."""
        attempt = self.hooks.claim(batch_id, self.policy.max_attempts, self.policy.timeout_s + HOLD_MARGIN_S)
        if attempt is None:
            return "not due"
        body = event_body(self.jobs, self.jobs.get_any(attempt.batch_id))
        headers = signed_headers(self.hooks.secrets(attempt.tenant).signing(), message_id(attempt.batch_id),
                                 int(time.time()), body)
        error = self.policy.attempt(attempt.url, body, headers, self.resolve, self.tls)
        if error is None:
            self.hooks.delivered(attempt)
            return "delivered"
        self.hooks.failed(attempt, error, self.policy.retry_in(attempt.number))
        log.warning("webhook of %s: attempt %d of %d failed: %s", batch_id, attempt.number,
                    self.policy.max_attempts, error)
        return "failed"


def message_id(batch_id: str) -> str:
    """The event's ID: the same on every attempt (a batch ends once), so a receiver can drop repeats."""
    return f"msg_{batch_id}"


def event_body(jobs: JobStore, batch: Batch) -> bytes:
    """`{"type": "batch.<status>", "timestamp": when it ended, "data": its Batch object}`."""
    ended: dt.datetime | None = getattr(batch, f"{batch.status}_at", None)
    event: dict[str, Any] = {"type": f"batch.{batch.status}",
                             "timestamp": (ended or batch.created_at).isoformat().replace("+00:00", "Z"),
                             "data": batch_object(jobs, batch)}
    return json.dumps(event, separators=(",", ":")).encode()
