"""Bringing a step's tool calls to an end, fresh from a reply or found open after a restart: waiting for a human's
decision on those that need approval (the worker session held meanwhile), answering the rejected, ending
"interrupted" the non-idempotent ones a crash left running, and running the rest concurrently. Each result is
appended as it ends and closes its call."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent_runtime.events import ApprovalRequested, ToolFinished, ToolStarted
from agent_runtime.store.tables import APPROVED, AWAITING, FINISHED, INTERRUPTED, REJECTED, STARTED, TOOL_RESULT
from agent_runtime.store.transcript import Entry, NotDecidable, TranscriptStore
from agent_runtime.tools import ToolCall, ToolRegistry, ToolResult
from foundation.clients.worker import WorkerClient


@dataclass
class TurnControl:
    """How a runner steers a turn from outside: cancellation (polled between tokens, tool batches and approval
    polls), the worker-session hold while the turn waits for a human, and how long it waits (None: until a human
    decides; past it, the calls still waiting are rejected, the model told why)."""

    turn_id: str = "turn"
    cancelled: Callable[[], bool] = lambda: False
    poll_s: float = 0.2
    hold_s: float = 3600.0
    approval_timeout_s: float | None = None


@dataclass
class TurnContext:
    """What one turn works with: its tenant, the worker that holds its session, the session's tools."""

    tenant: str
    client: WorkerClient
    tools: ToolRegistry
    control: TurnControl
    address: str = ""  # the worker's, for routing away from it when it is lost
    tried: set[str] = field(default_factory=set)  # workers this turn lost
    rebuilt_step: int = 0  # the step whose lost worker session this turn rebuilt: at most one rebuild a step

    def needs_approval(self, name: str) -> bool:
        tool = self.tools.get(name)
        return tool is not None and tool.requires_approval


@dataclass
class OpenCall:
    id: str
    name: str
    arguments: Any
    status: str
    key: str  # the idempotency key


def open_calls(store: TranscriptStore, session) -> list[OpenCall]:
    return [OpenCall(r.tool_call_id, r.tool_name, r.arguments, r.call_status, r.idempotency_key)
            for r in store.open_calls(session.tenant, session.id)]


def settle_calls(store: TranscriptStore, turn: TurnContext, session, calls: list[OpenCall], recovering: bool):
    """Yields the calls' events; returns False when the turn was cancelled while a call awaited approval."""
    awaiting, timed_out = [c for c in calls if c.status == AWAITING], set()
    for call in awaiting:
        yield ApprovalRequested(call.id, call.name, call.arguments)
    if awaiting:
        decided, timed_out = _await_decisions(store, turn, session, {c.id for c in awaiting})
        if decided is None:
            for call in awaiting:
                content = json.dumps({"error": "not run: the turn was cancelled before this call was approved"})
                store.finish_call(turn.tenant, session.id, call.id, Entry(TOOL_RESULT, content, is_error=True),
                                  INTERRUPTED)
                yield ToolFinished(call.id, call.name, content, True, INTERRUPTED)
            return False
        for call in awaiting:
            call.status = decided[call.id]
    runnable = []
    for call in calls:
        tool = turn.tools.get(call.name)
        if call.status == REJECTED:
            why = (f"no one decided on this call within {turn.control.approval_timeout_s:g} s"
                   if call.id in timed_out else "a human did not approve this call")
            content, status = json.dumps({"error": f"rejected: {why}"}), REJECTED
        elif call.status == STARTED and recovering and not (tool is not None and tool.idempotent):
            content = json.dumps({"error": "interrupted: the runtime stopped while this call ran, and it was not run "
                                           "again (the tool is not idempotent)"})
            status = INTERRUPTED
        else:
            runnable.append(call)
            continue
        store.finish_call(turn.tenant, session.id, call.id, Entry(TOOL_RESULT, content, is_error=True), status)
        yield ToolFinished(call.id, call.name, content, True, status)
    approved = [c.id for c in runnable if c.status == APPROVED]
    if approved:
        store.set_calls(turn.tenant, session.id, approved, STARTED)
    for call in runnable:
        yield ToolStarted(call.id, call.name, call.arguments)
    results = asyncio.run(_run_calls(store, turn, session, runnable)) if runnable else []
    for call, result in zip(runnable, results):
        yield ToolFinished(call.id, call.name, result.content, result.is_error, FINISHED)
    return True


async def _run_calls(store: TranscriptStore, turn: TurnContext, session, calls: list[OpenCall]) -> list[ToolResult]:
    """Run the calls, each result appended (closing its call) as that call ends, while the others may still run: a
    crash then leaves open only the calls that had not ended, and a resumed turn runs (or interrupts) just those, so
    a non-idempotent tool that ended is never run twice. The append runs in a thread, off the loop the calls await
    on; concurrent appends are serialized by the store (the session row is locked)."""

    async def record(index: int, result: ToolResult) -> None:
        await asyncio.to_thread(store.finish_call, turn.tenant, session.id, calls[index].id,
                                Entry(TOOL_RESULT, result.content, is_error=result.is_error))

    return await turn.tools.run_calls([ToolCall(c.id, c.name, c.arguments) for c in calls], [c.key for c in calls],
                                      on_result=record)


def _await_decisions(store: TranscriptStore, turn: TurnContext, session,
                     call_ids: set[str]) -> tuple[dict[str, str] | None, set[str]]:
    """Poll the open calls (an index) until every one in call_ids is decided, holding the worker session
    meanwhile: their statuses (None when the turn is cancelled first), and those rejected for want of a decision
    within the approval timeout (counted from when this runtime began to wait)."""
    control, holder, held_until = turn.control, f"turn-{turn.control.turn_id}", 0.0
    give_up_at = None if control.approval_timeout_s is None else time.monotonic() + control.approval_timeout_s
    timed_out: set[str] = set()
    try:
        while True:
            if time.monotonic() > held_until - control.hold_s / 2:
                turn.client.hold_session(session.worker_session_id, holder, control.hold_s)
                held_until = time.monotonic() + control.hold_s
            statuses = {r.tool_call_id: r.call_status for r in store.open_calls(turn.tenant, session.id)
                        if r.tool_call_id in call_ids}
            if all(status != AWAITING for status in statuses.values()):
                return statuses, timed_out
            if control.cancelled():
                return None, timed_out
            if give_up_at is not None and time.monotonic() >= give_up_at:
                for call_id in [c for c, status in statuses.items() if status == AWAITING]:
                    try:
                        store.decide(turn.tenant, session.id, call_id, approve=False)
                        timed_out.add(call_id)
                    except NotDecidable:  # a human decided just now: theirs stands
                        pass
                continue
            time.sleep(control.poll_s)
    finally:
        if held_until:
            turn.client.hold_session(session.worker_session_id, holder, 0)
