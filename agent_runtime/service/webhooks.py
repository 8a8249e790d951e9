"""Turn webhooks: a turn started with a `webhook_url` notifies it when it ends (`turn.done`, `turn.cancelled`), fails
(`turn.failed`) or waits for a human's approval (`turn.awaiting_approval`), so a caller that detached needs no
polling. Each event is queued in SQL as the turn emits it and POSTed by a delivery thread of whichever runtime
claims it: signed with the tenant's secret (Standard Webhooks: foundation/webhooks/signing.py), only to addresses
the operator's allow-list lets it reach (the batch webhooks' rules, foundation/webhooks/destinations.py), retried with
exponential backoff up to `webhook_max_attempts`. The body:

    {"type": "turn.done", "timestamp": "2026-12-07T10:00:00Z",
     "data": {"turn_id": ..., "session_id": ..., "status": "done", "stop_reason": "answer", "content": ...,
              "usage": {...}, "error": "", "tool_call": null}}

(`tool_call`: {"id", "name", "arguments"} of the call awaiting approval)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import ssl
import threading
import time
from dataclasses import asdict
from typing import Any

from agent_runtime.events import ApprovalRequested, TurnDone, TurnEvent, TurnFailed
from agent_runtime.store.tables import AWAITING_APPROVAL, CANCELLED, DONE, FAILED
from agent_runtime.store.webhooks import TurnWebhookStore
from foundation.webhooks.delivery import WebhookPolicy
from foundation.webhooks.destinations import Resolver, system_resolver
from foundation.webhooks.signing import signed_headers

log = logging.getLogger(__name__)
# A claimed attempt is held this long past its own deadline before another runtime may take it over.
HOLD_MARGIN_S = 60.0


def event_body(turn_id: str, session_id: str, event: TurnEvent) -> bytes:
    data: dict[str, Any] = {"turn_id": turn_id, "session_id": session_id, "status": DONE, "stop_reason": "",
                            "content": "", "usage": None, "error": "", "tool_call": None}
    match event:
        case TurnDone():
            status = CANCELLED if event.reason == "cancelled" else DONE
            data.update(status=status, stop_reason=event.reason, content=event.content, usage=asdict(event.usage))
        case TurnFailed():
            data.update(status=FAILED, error=f"{event.code}: {event.message}")
        case ApprovalRequested():
            data.update(status=AWAITING_APPROVAL,
                        tool_call={"id": event.call_id, "name": event.name, "arguments": event.arguments})
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    return json.dumps({"type": f"turn.{data['status']}", "timestamp": stamp, "data": data},
                      separators=(",", ":"), ensure_ascii=False).encode()


class TurnWebhooks:
    """Queues a turn's notifying events and delivers them from a thread of this runtime (every runtime delivers
    whatever is due, its own events or not: a runtime that stops leaves its queue to the others)."""

    def __init__(self, store: TurnWebhookStore, policy: WebhookPolicy, *, poll_s: float = 1.0,
                 resolve: Resolver = system_resolver, tls: ssl.SSLContext | None = None) -> None:
        self.store, self.policy, self.poll_s, self.resolve, self.tls = store, policy, poll_s, resolve, tls
        self._wake, self._stopping = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._deliver_due, name="turn-webhooks", daemon=True)
        self._thread.start()

    def check_url(self, url: str) -> None:
        """A URL as a caller gives it: its form, and its host when that is an address (ValueError otherwise)."""
        self.policy.destinations.check_submitted(url)

    def notify(self, tenant: str, turn_id: str, session_id: str, url: str, seq: int, event: TurnEvent) -> None:
        """Queue the event (its ID, `msg_{turn}_{seq}`, is what every attempt and a continued turn reuse)."""
        if self.store.add(tenant, f"msg_{turn_id}_{seq}", turn_id, url, event_body(turn_id, session_id, event)):
            self._wake.set()

    def deliver(self, tenant: str, event_id: str) -> str:
        """One attempt at an event if it is due: "delivered", "failed" or "not due"."""
        attempt = self.store.claim(tenant, event_id, self.policy.max_attempts, self.policy.timeout_s + HOLD_MARGIN_S)
        if attempt is None:
            return "not due"
        headers = signed_headers(self.store.secrets(tenant).signing(), event_id, int(time.time()), attempt.body)
        error = self.policy.attempt(attempt.url, attempt.body, headers, self.resolve, self.tls)
        if error is None:
            self.store.delivered(attempt)
            return "delivered"
        self.store.failed(attempt, error, self.policy.retry_in(attempt.number))
        log.warning("turn webhook %s: attempt %d of %d failed: %s", event_id, attempt.number,
                    self.policy.max_attempts, error)
        return "failed"

    def _deliver_due(self) -> None:
        failing = False
        while not self._stopping.is_set():
            try:
                for tenant, event_id in self.store.due(self.policy.max_attempts):
                    if self._stopping.is_set():
                        return
                    self.deliver(tenant, event_id)
                failing = False
            except Exception:  # noqa: BLE001 - the database is back at a later round (said once, not every round)
                if not failing:
                    log.warning("turn webhook deliveries wait for the database", exc_info=True)
                failing = True
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=self.policy.timeout_s + 1)
