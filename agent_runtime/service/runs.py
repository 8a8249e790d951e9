"""Turns running in this runtime process, detached from their callers. Each turn runs on its own thread; its events
get seqs and go to an in-memory log that callers follow, and (all but text deltas) to SQL, so a caller can reattach
from a cursor here or through any other runtime process. A heartbeat thread renews the turns this process owns and
picks up cancels asked for elsewhere. A turn's thread runs in the context of the call that started it, so its spans
join that caller's trace. Turn IDs are per tenant: a turn here is known by (tenant, turn ID)."""

from __future__ import annotations

import collections
import contextvars
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from agent_runtime.calls import TurnControl
from agent_runtime.events import (
    ApprovalRequested,
    ModeChosen,
    TurnDone,
    TurnEvent,
    TurnFailed,
    durable,
    from_payload,
    kind_of,
    to_payload,
)
from agent_runtime.loop import AgentLoop, Limits
from agent_runtime.service.metrics import AgentMetrics
from agent_runtime.service.webhooks import TurnWebhooks
from agent_runtime.store.tables import AWAITING_APPROVAL, CANCELLED, DONE, FAILED, RUNNING, TURN_ACTIVE
from agent_runtime.store.transcript import AgentSessionNotFound
from agent_runtime.store.turns import TurnActive, TurnExists, TurnNotFound, TurnStore
from foundation.clients.worker import Sampling
from foundation.errors import status_of
from foundation.ids import check_id
from foundation.limits import TenantLimit
from foundation.tenancy import act_for

log = logging.getLogger(__name__)


@dataclass
class TurnRequest:
    """A turn's inputs, kept with the turn so a continuation (after an approval, in another process) has them."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    mode: str | None = None
    difficulty: str | None = None
    limits: Limits = field(default_factory=Limits)
    sampling: Sampling | None = None
    first_tool_choice: str | None = None
    webhook_url: str | None = None  # notified when the turn ends, fails or waits for approval

    def to_json(self) -> dict[str, Any]:
        return {"messages": self.messages, "mode": self.mode, "difficulty": self.difficulty,
                "limits": asdict(self.limits), "sampling": asdict(self.sampling) if self.sampling else None,
                "first_tool_choice": self.first_tool_choice, "webhook_url": self.webhook_url}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TurnRequest:
        sampling = data.get("sampling")
        return cls(data.get("messages") or [], data.get("mode"), data.get("difficulty"),
                   Limits(**data.get("limits") or {}), Sampling(**sampling) if sampling else None,
                   data.get("first_tool_choice"), data.get("webhook_url"))


class TurnRun:
    """A turn on this process's thread: its event log and how callers wait on it."""

    def __init__(self, turn_id: str, tenant: str, session_id: str, next_seq: int,
                 webhook_url: str | None = None) -> None:
        self.turn_id, self.tenant, self.session_id, self.webhook_url = turn_id, tenant, session_id, webhook_url
        self.events: list[tuple[int, TurnEvent]] = []
        self.next_seq, self.status, self.ended = next_seq, RUNNING, False
        self.cancel = threading.Event()
        self.changed = threading.Condition()

    @property
    def key(self) -> tuple[str, str]:
        return self.tenant, self.turn_id


class TurnRunner:
    def __init__(self, loop: AgentLoop, turns: TurnStore, owner: str | None = None, heartbeat_s: float = 5.0,
                 poll_s: float = 0.2, keep_ended: int = 256, max_turns_per_tenant: int | None = None,
                 on_turn_end: Callable[[str, dict[str, int]], None] | None = None, adopt_orphans: bool = True,
                 metrics: AgentMetrics | None = None, webhooks: TurnWebhooks | None = None,
                 approval_timeout_s: float | None = None) -> None:
        """`webhooks` delivers the notifications of turns started with a webhook URL (none: such a turn is
        refused); `approval_timeout_s` rejects a call no human decided on within it (None: it waits)."""
        self.loop, self.turns, self.metrics = loop, turns, metrics or AgentMetrics()
        self.owner = owner or f"runtime-{uuid.uuid4().hex[:12]}"
        self.heartbeat_s, self.poll_s, self.keep_ended = heartbeat_s, poll_s, keep_ended
        self.max_turns_per_tenant, self.on_turn_end = max_turns_per_tenant, on_turn_end
        self.adopt_orphans, self.webhooks, self.approval_timeout_s = adopt_orphans, webhooks, approval_timeout_s
        self.live: dict[tuple[str, str], TurnRun] = {}  # by (tenant, turn ID)
        self.ended: collections.OrderedDict[tuple[str, str], TurnRun] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._heartbeats = threading.Thread(target=self._heartbeat, name="turn-heartbeats", daemon=True)
        self._heartbeats.start()

    # -- starting ------------------------------------------------------------------------------------------------

    def start(self, tenant: str, session_id: str, request: TurnRequest, turn_id: str | None = None) -> str:
        """Start a turn (or, when `turn_id` names one of this session's turns already, leave it be: a retried
        RunTurn attaches instead of running twice); returns its ID."""
        if turn_id:
            check_id(turn_id, "turn_id")
            if self._retried(tenant, session_id, turn_id):
                return turn_id
        turn_id = turn_id or f"turn-{uuid.uuid4().hex}"
        self._check_tenant(tenant)
        if request.webhook_url is not None:
            if self.webhooks is None:
                raise ValueError("webhook_url: this runtime sends no webhooks")
            self.webhooks.check_url(request.webhook_url)
        try:
            turn = self.turns.start(tenant, session_id, turn_id, self.owner, request.to_json())
        except TurnExists:  # a concurrent retry of the same start got there first
            if self._retried(tenant, session_id, turn_id):
                return turn_id
            raise
        self._launch(TurnRun(turn_id, tenant, session_id, turn.next_event, request.webhook_url), request)
        return turn_id

    def _retried(self, tenant: str, session_id: str, turn_id: str) -> bool:
        """Whether the tenant's turn `turn_id` exists already (on this session: a retried start)."""
        existing = self._existing(tenant, turn_id)
        if existing is not None and existing.session_id != session_id:
            raise TurnExists(f"turn_id: turn {turn_id} belongs to another session")
        return existing is not None

    def continue_turn(self, tenant: str, turn_id: str) -> None:
        """Adopt a turn whose runtime is gone and run it on from SQL: open calls settled (decided ones, idempotent
        ones re-run, the rest interrupted), then the next step. Its input is sent again only if no step of it was
        recorded (the runtime died in its first generation)."""
        with self._lock:
            if (tenant, turn_id) in self.live:
                return
        turn = self.turns.resume(tenant, turn_id, self.owner)
        request = TurnRequest.from_json(turn.request)
        if self.loop.store.get(tenant, turn.session_id).steps >= turn.first_step:
            request.messages, request.first_tool_choice = [], None
        request.mode = turn.mode or request.mode
        self._launch(TurnRun(turn_id, tenant, turn.session_id, turn.next_event, request.webhook_url), request)

    def _launch(self, run: TurnRun, request: TurnRequest) -> None:
        with self._lock:
            self.live[run.key] = run
        caller = contextvars.copy_context()  # the starting RPC's span: the turn's spans and calls are its children
        caller.run(act_for, run.tenant)  # and every call of the turn (workers, jobs) acts for the session's tenant
        threading.Thread(target=caller.run, args=(self._run, run, request), name=run.turn_id, daemon=True).start()

    def _existing(self, tenant: str, turn_id: str):
        try:
            return self.turns.get(tenant, turn_id)
        except TurnNotFound:
            return None

    def _check_tenant(self, tenant: str) -> None:
        if self.max_turns_per_tenant is None:
            return
        with self._lock:
            running = sum(run.tenant == tenant for run in self.live.values())
        if running >= self.max_turns_per_tenant:
            raise TenantLimit(f"tenant {tenant} runs {running} turns, its limit; retry when one ends")

    # -- running -------------------------------------------------------------------------------------------------

    def _run(self, run: TurnRun, request: TurnRequest) -> None:
        control = TurnControl(run.turn_id, cancelled=run.cancel.is_set, poll_s=self.poll_s,
                              approval_timeout_s=self.approval_timeout_s)
        self.metrics.turns_started.inc()
        started, reason = time.monotonic(), "failed"
        try:
            for event in self.loop.run_turn(run.tenant, run.session_id, request.messages, mode=request.mode,
                                            difficulty=request.difficulty, limits=request.limits,
                                            sampling=request.sampling, first_tool_choice=request.first_tool_choice,
                                            control=control):
                self._emit(run, event)
                if isinstance(event, TurnDone):
                    reason = event.reason
                    status = CANCELLED if event.reason == "cancelled" else DONE
                    self.turns.finish(run.tenant, run.turn_id, self.owner, status, stop_reason=event.reason,
                                      content=event.content, usage=asdict(event.usage))
                    self._notify(run, event)
                    if self.on_turn_end is not None:
                        self.on_turn_end(run.tenant, asdict(event.usage))
        except Exception as error:  # noqa: BLE001 - the turn fails; the runtime goes on
            code = status_of(error).name
            if code == "INTERNAL":
                log.exception("turn %s failed", run.turn_id)
            failed = TurnFailed(code, f"{type(error).__name__}: {error}")
            self._emit(run, failed)
            self.turns.finish(run.tenant, run.turn_id, self.owner, FAILED, error=failed.message)
            self._notify(run, failed)
        finally:
            self.metrics.turn_ended(reason, time.monotonic() - started)
            with run.changed:
                run.ended = True
                run.changed.notify_all()
            with self._lock:
                self.live.pop(run.key, None)
                self.ended[run.key] = run
                while len(self.ended) > self.keep_ended:
                    self.ended.popitem(last=False)

    def _emit(self, run: TurnRun, event: TurnEvent) -> None:
        self.metrics.observe(event)
        seq = run.next_seq
        if durable(event):
            self.turns.add_events(run.tenant, run.turn_id, [(seq, kind_of(event), to_payload(event))])
        if isinstance(event, ModeChosen):
            self.turns.choose_mode(run.tenant, run.turn_id, event.mode, event.reason, event.via_job)
        status = AWAITING_APPROVAL if isinstance(event, ApprovalRequested) else RUNNING
        if status != run.status:
            run.status = status
            self.turns.heartbeat(run.tenant, run.turn_id, self.owner, status)
        with run.changed:
            run.events.append((seq, event))
            run.next_seq = seq + 1
            run.changed.notify_all()
        if isinstance(event, ApprovalRequested):  # the turn's row says so already, for a receiver that looks
            self._notify(run, event)

    def _notify(self, run: TurnRun, event: TurnEvent) -> None:
        if not run.webhook_url or self.webhooks is None:
            return
        try:
            self.webhooks.notify(run.tenant, run.turn_id, run.session_id, run.webhook_url, run.next_seq - 1, event)
        except Exception:  # noqa: BLE001 - the turn is not failed for its notification; the event stream has it
            log.warning("turn %s: its webhook event could not be queued", run.turn_id, exc_info=True)

    def _heartbeat(self) -> None:
        """Renew this runtime's turns (picking up cancels asked for elsewhere) and adopt orphaned ones."""
        while not self._stopping.wait(self.heartbeat_s):
            with self._lock:
                runs = list(self.live.values())
            try:
                for run in runs:
                    if self.turns.heartbeat(run.tenant, run.turn_id, self.owner):
                        run.cancel.set()
                if self.adopt_orphans:
                    for turn in self.turns.orphans():
                        self._adopt(turn)
            except Exception:  # noqa: BLE001 - the database is back at the next beat
                log.warning("turn heartbeat failed", exc_info=True)

    def _adopt(self, turn) -> None:
        try:
            self.continue_turn(turn.tenant, turn.id)
            log.info("adopted turn %s (its runtime %s stopped)", turn.id, turn.owner)
        except (TurnActive, AgentSessionNotFound):  # another runtime was first, or the session is gone
            pass

    # -- following and steering ----------------------------------------------------------------------------------

    def follow(self, tenant: str, turn_id: str, after: int, active: Callable[[], bool] = lambda: True
               ) -> Iterator[tuple[int, TurnEvent]]:
        """The turn's events after seq `after`, then new ones until it ends (or `active` turns false)."""
        with self._lock:
            run = self.live.get((tenant, turn_id)) or self.ended.get((tenant, turn_id))
        if run is not None:
            yield from self._follow_here(run, after, active)
        else:
            yield from self._follow_sql(tenant, turn_id, after, active)

    def _follow_here(self, run: TurnRun, after: int, active: Callable[[], bool]):
        sent = 0
        while active():
            with run.changed:
                while sent < len(run.events) and run.events[sent][0] <= after:
                    sent += 1
                if sent == len(run.events) and not run.ended:
                    run.changed.wait(self.poll_s)
                fresh, ended = run.events[sent:], run.ended
            sent += len(fresh)
            yield from fresh
            if ended and sent == len(run.events):
                return

    def _follow_sql(self, tenant: str, turn_id: str, after: int, active: Callable[[], bool]):
        cursor = after
        while active():
            ended = self.turns.get(tenant, turn_id).status not in TURN_ACTIVE  # read before the events it covers
            rows = self.turns.events(tenant, turn_id, cursor)
            for row in rows:
                cursor = row.seq
                yield row.seq, from_payload(row.kind, row.payload)
            if rows:
                continue
            if ended:
                return
            time.sleep(self.poll_s)

    def cancel(self, tenant: str, turn_id: str):
        turn = self.turns.cancel(tenant, turn_id)
        with self._lock:
            run = self.live.get((tenant, turn_id))
        if run is not None:
            run.cancel.set()
        return turn

    def decided(self, tenant: str, turn_id: str | None) -> None:
        """A call of `turn_id` was decided: a turn paused in a live runtime picks it up by itself (one whose
        runtime died recently is adopted once its heartbeat is stale); an ended one is continued here."""
        if turn_id is None:
            return
        with self._lock:
            if (tenant, turn_id) in self.live:
                return
        if self.turns.get(tenant, turn_id).status not in TURN_ACTIVE:
            self.continue_turn(tenant, turn_id)

    def stop(self, grace_s: float = 30.0) -> None:
        """Let running turns end within the grace period; those still running then end interrupted once their
        heartbeat goes stale, and continue from SQL."""
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self.live:
                    break
            time.sleep(0.1)
        self._stopping.set()
