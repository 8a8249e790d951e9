"""A turn of an agent: append the new input to the worker session, generate, run the tool calls, give the results back,
and loop until an answer, the step limit, a budget or a cancel. SQL is the source of truth:

1. A step's input, reply and tool calls are appended in one transaction with the worker session's commit that holds
   them. A worker session found ahead of that commit (the runtime died between the two) is rewound to it.
2. Each tool result is appended as it arrives and closes its call. A call still open when the runtime restarts is
   re-run with its idempotency key if its tool is idempotent; otherwise it ends "interrupted".
3. A call of a tool that requires approval waits for a human's decision, the turn paused and the worker session held;
   a decision made after a restart is picked up by whichever runtime continues the turn.
4. The next step's input is the results of the last step's calls, read through the step index: a turn's work is
   proportional to what it adds, never to the history.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry import trace

from agent_runtime.events import (
    ApprovalRequested,
    Compacted,
    ModeChosen,
    StepStarted,
    TextDelta,
    ToolFinished,
    ToolStarted,
    TurnDone,
    TurnEvent,
)
from agent_runtime.policy import THINK_HIGH, DefaultPolicy, ModeDecision, ModePolicy, OperatorLimits, TurnSignals
from agent_runtime.store.models import (
    APPROVED,
    ASSISTANT,
    AWAITING,
    FINISHED,
    INTERRUPTED,
    REJECTED,
    STARTED,
    TOOL_CALL,
    TOOL_RESULT,
    USER,
    AgentSession,
)
from agent_runtime.store.transcript import Entry, TranscriptStore
from agent_runtime.think_max import job_step
from agent_runtime.tools import ToolCall, ToolRegistry
from model_worker.client import Delta, Final, Sampling, WorkerClient
from model_worker.client import Tool as WorkerTool
from services.jobs.client import JobsClient

tracer = trace.get_tracer("agent_runtime")
_USAGE = ("prompt_tokens", "prefilled_tokens", "reused_tokens", "completion_tokens", "reasoning_tokens")


@dataclass
class Limits:
    max_steps: int = 16
    max_completion_tokens: int | None = None
    max_seconds: float | None = None


@dataclass
class TurnControl:
    """How a runner steers a turn from outside: cancellation (polled between tokens, tool batches and approval
    polls) and the worker-session hold while the turn waits for a human."""

    turn_id: str = "turn"
    cancelled: Callable[[], bool] = lambda: False
    poll_s: float = 0.2
    hold_s: float = 3600.0


class Compactor(Protocol):
    def maybe_compact(self, tenant: str, session: AgentSession, context_tokens: int) -> Compacted | None: ...


@dataclass
class _Call:
    """An open call as the settling code sees it, fresh from a reply or found open in the transcript."""

    id: str
    name: str
    arguments: Any
    status: str
    key: str


class AgentLoop:
    def __init__(self, store: TranscriptStore, client: WorkerClient, tools: ToolRegistry,
                 jobs: JobsClient | None = None, policy: ModePolicy | None = None,
                 operator: OperatorLimits | None = None, compactor: Compactor | None = None,
                 job_poll_s: float = 0.2) -> None:
        self.store, self.client, self.tools, self.jobs = store, client, tools, jobs
        self.policy, self.operator, self.compactor = policy or DefaultPolicy(), operator or OperatorLimits(), compactor
        self.job_poll_s = job_poll_s

    def create_session(self, tenant: str, session_id: str, system_prompt: str = "",
                       think_max: bool = False) -> AgentSession:
        """An agent session and its worker session (system prompt and tools fixed there, prefilled once)."""
        tools = [WorkerTool(t.name, t.description, t.parameters) for t in self.tools.all()]
        info = self.client.create_session(system_prompt=system_prompt, tools=tools, think_max=think_max,
                                          session_id=f"agent-{session_id}")
        self.store.create(tenant, session_id, system_prompt, self.tools.schemas(), info.session_id, think_max)
        self.store.set_worker(tenant, session_id, info.session_id, info.commit)
        return self.store.get(tenant, session_id)

    def run_turn(self, tenant: str, session_id: str, messages: Sequence[dict[str, Any]], *, mode: str | None = None,
                 difficulty: str | None = None, limits: Limits | None = None, sampling: Sampling | None = None,
                 first_tool_choice: str | None = None, control: TurnControl | None = None) -> Iterator[TurnEvent]:
        """Run a turn: `mode` (non-think, think-high, think-max) wins when given; otherwise the policy picks one
        from `difficulty` and the session. A Think Max turn's first step runs as a job on the jobs service. With
        no messages, the turn continues the last step (open calls settled, their results given back)."""
        limits, control = limits or Limits(), control or TurnControl()
        span = tracer.start_span("agent.turn", attributes={"agent.session_id": session_id,
                                                           "agent.turn_id": control.turn_id})
        try:
            done = yield from self._turn(tenant, session_id, messages, mode, difficulty, limits, sampling,
                                         first_tool_choice, control, span)
            span.set_attributes({"agent.stop_reason": done.reason, "agent.steps": done.steps})
        except BaseException as error:
            span.record_exception(error)
            raise
        finally:
            span.end()

    def _turn(self, tenant, session_id, messages, mode, difficulty, limits, sampling, tool_choice, control, span):
        session = self.store.get(tenant, session_id)
        self._align_worker(session)
        if not (yield from self._settle(tenant, session, self._open_calls(session), control, recovering=True)):
            return (yield from self._done(TurnDone("cancelled", "", "", 0)))
        inputs = [*self._last_results(session), *messages]
        if self.compactor is not None:
            compacted = self.compactor.maybe_compact(tenant, session, self.client.get_session(
                session.worker_session_id).tokens)
            if compacted is not None:
                yield compacted
                session = self.store.get(tenant, session_id)
        decision = self._decide(session, mode, difficulty, limits)
        span.set_attributes({"agent.mode": decision.mode, "agent.mode_reason": decision.reason,
                             "agent.via_job": decision.via_job})
        yield ModeChosen(decision.mode, decision.reason, decision.via_job)
        usage = dict.fromkeys(_USAGE, 0)
        started, via_job = time.monotonic(), decision.via_job
        for number in range(1, limits.max_steps + 1):
            if control.cancelled():
                return (yield from self._done(TurnDone("cancelled", "", "", number - 1, usage)))
            yield StepStarted(session.steps + 1, decision.mode)
            if via_job:
                reply = yield from job_step(self.jobs, session.worker_session_id, inputs, sampling,
                                            control.cancelled, self.job_poll_s)
                via_job = False  # the rest of the turn runs on the Think Max session the job left
            else:
                reply = yield from self._step(session, inputs, decision.mode, sampling, tool_choice, control)
            if reply is None:
                return (yield from self._done(TurnDone("cancelled", "", "", number - 1, usage)))
            content, reasoning, calls, step_usage, job_session = reply
            for name in _USAGE:
                usage[name] += step_usage.get(name, 0)
            session = self._record_step(tenant, session, inputs, content, reasoning, calls, job_session,
                                        decision.mode, control.turn_id)
            if not calls:
                return (yield from self._done(TurnDone("answer", content, reasoning, number, usage)))
            step = session.steps
            fresh = [_Call(c.id, c.name, c.arguments, AWAITING if self._needs_approval(c.name) else STARTED,
                           f"{session_id}/{step}/{c.id}") for c in calls]
            if not (yield from self._settle(tenant, session, fresh, control, recovering=False)):
                return (yield from self._done(TurnDone("cancelled", "", "", number, usage)))
            inputs, tool_choice = self._last_results(session), None
            over = _over_budget(limits, usage, started)
            if over:
                return (yield from self._done(TurnDone(over, "", "", number, usage)))
        return (yield from self._done(TurnDone("step_limit", "", "", limits.max_steps, usage)))

    @staticmethod
    def _done(done: TurnDone):
        yield done
        return done

    def _record_step(self, tenant, session, inputs, content, reasoning, calls, job_session, mode, turn_id):
        worker_session_id = job_session or session.worker_session_id
        info = self.client.get_session(worker_session_id)
        step = session.steps + 1
        entries = [Entry(USER, m.get("content") or "") for m in inputs if m.get("role") == "user"]
        entries.append(Entry(ASSISTANT, content, reasoning or None))
        entries += [Entry(TOOL_CALL, tool_call_id=c.id, tool_name=c.name, arguments=c.arguments,
                          idempotency_key=f"{session.id}/{step}/{c.id}", awaits_approval=self._needs_approval(c.name))
                    for c in calls]
        self.store.append_step(tenant, session.id, entries, worker_session_id=worker_session_id,
                               worker_commit=info.commit, mode=mode, turn_id=turn_id)
        return self.store.get(tenant, session.id)

    def _needs_approval(self, name: str) -> bool:
        tool = self.tools.get(name)
        return tool is not None and tool.requires_approval

    def _decide(self, session, mode: str | None, difficulty: str | None, limits: Limits) -> ModeDecision:
        info = self.client.get_session(session.worker_session_id)
        decision = self.policy.choose(TurnSignals(
            requested_mode=mode, difficulty=difficulty, tool_count=len(self.tools.all()),
            prior_failures=session.failures, remaining_tokens=limits.max_completion_tokens,
            context_tokens=info.tokens, session_think_max=info.think_max), self.operator)
        if decision.via_job and self.jobs is None:  # no queue to run it on
            if info.think_max:
                return ModeDecision(decision.mode, decision.reason + "; run directly (no jobs service)")
            return ModeDecision(THINK_HIGH, decision.reason + "; but there is no jobs service to run Think Max")
        return decision

    def _step(self, session, inputs: list[dict], mode: str, sampling: Sampling | None, tool_choice: str | None,
              control: TurnControl):
        """A step on the agent's worker session: streams its text; returns the reply, or None when cancelled
        (closing the stream cancels the generation)."""
        final = None
        events = self.client.generate(session_id=session.worker_session_id, messages=list(inputs), mode=mode,
                                      sampling=sampling, tool_choice=tool_choice)
        try:
            for event in events:
                if control.cancelled():
                    return None
                if isinstance(event, Delta) and event.text:
                    yield TextDelta(event.text, event.reasoning)
                elif isinstance(event, Final):
                    final = event
        finally:
            events.close()
        calls = [ToolCall(c.id, c.name, c.arguments) for c in final.tool_calls]
        return (final.content, final.reasoning_content, calls, {name: getattr(final.usage, name) for name in _USAGE},
                None)

    def _align_worker(self, session) -> None:
        """SQL decides: a worker session that committed past the last recorded step is rewound to it."""
        info = self.client.get_session(session.worker_session_id)
        if session.worker_commit is not None and info.commit != session.worker_commit:
            self.client.rewind(session.worker_session_id, session.worker_commit)

    def _open_calls(self, session) -> list[_Call]:
        return [_Call(r.tool_call_id, r.tool_name, r.arguments, r.call_status, r.idempotency_key)
                for r in self.store.open_calls(session.id)]

    def _settle(self, tenant: str, session, calls: list[_Call], control: TurnControl, recovering: bool):
        """Bring open calls to an end: wait for the decisions on those that await approval, answer the rejected,
        end interrupted the non-idempotent ones a crash left started (when `recovering`), and run the rest
        concurrently. Returns False when the turn was cancelled first."""
        awaiting = [c for c in calls if c.status == AWAITING]
        for call in awaiting:
            yield ApprovalRequested(call.id, call.name, call.arguments)
        if awaiting:
            decided = self._await_decisions(session, {c.id for c in awaiting}, control)
            if decided is None:
                for call in awaiting:
                    content = json.dumps({"error": "not run: the turn was cancelled before this call was approved"})
                    self.store.finish_call(tenant, session.id, call.id, Entry(TOOL_RESULT, content, is_error=True),
                                           INTERRUPTED)
                    yield ToolFinished(call.id, call.name, content, True, INTERRUPTED)
                return False
            for call in awaiting:
                call.status = decided[call.id]
        runnable = []
        for call in calls:
            tool = self.tools.get(call.name)
            if call.status == REJECTED:
                content, status = json.dumps({"error": "rejected: a human did not approve this call"}), REJECTED
            elif call.status == STARTED and recovering and not (tool is not None and tool.idempotent):
                content = json.dumps({"error": "interrupted: the runtime stopped while this call ran, and it was "
                                               "not run again (the tool is not idempotent)"})
                status = INTERRUPTED
            else:
                runnable.append(call)
                continue
            self.store.finish_call(tenant, session.id, call.id, Entry(TOOL_RESULT, content, is_error=True), status)
            yield ToolFinished(call.id, call.name, content, True, status)
        approved = [c.id for c in runnable if c.status == APPROVED]
        if approved:
            self.store.set_calls(session.id, approved, STARTED)
        for call in runnable:
            yield ToolStarted(call.id, call.name, call.arguments)
        results = asyncio.run(self.tools.run_calls([ToolCall(c.id, c.name, c.arguments) for c in runnable],
                                                   [c.key for c in runnable])) if runnable else []
        for call, result in zip(runnable, results):
            self.store.finish_call(tenant, session.id, call.id, Entry(TOOL_RESULT, result.content,
                                                                      is_error=result.is_error))
            yield ToolFinished(call.id, call.name, result.content, result.is_error, FINISHED)
        return True

    def _await_decisions(self, session, call_ids: set[str], control: TurnControl) -> dict[str, str] | None:
        """Poll the transcript's open calls (an index) until every one in call_ids is decided, holding the worker
        session meanwhile; None when the turn is cancelled first."""
        holder, held_until = f"turn-{control.turn_id}", 0.0
        try:
            while True:
                if time.monotonic() > held_until - control.hold_s / 2:
                    self.client.hold_session(session.worker_session_id, holder, control.hold_s)
                    held_until = time.monotonic() + control.hold_s
                statuses = {r.tool_call_id: r.call_status for r in self.store.open_calls(session.id)
                            if r.tool_call_id in call_ids}
                if all(status != AWAITING for status in statuses.values()):
                    return statuses
                if control.cancelled():
                    return None
                time.sleep(control.poll_s)
        finally:
            if held_until:
                self.client.hold_session(session.worker_session_id, holder, 0)

    def _last_results(self, session) -> list[dict[str, Any]]:
        """The results of the last step's calls: what the model reads next."""
        session = self.store.get(session.tenant, session.id)
        if not session.steps:
            return []
        last = self.store.step_entries(session.id, session.steps)
        if not any(e.kind == TOOL_CALL for e in last):
            return []
        return [{"role": "tool", "tool_call_id": e.tool_call_id, "content": e.content}
                for e in last if e.kind == TOOL_RESULT]


def _over_budget(limits: Limits, usage: dict[str, int], started: float) -> str | None:
    if limits.max_completion_tokens is not None and usage["completion_tokens"] >= limits.max_completion_tokens:
        return "token_budget"
    if limits.max_seconds is not None and time.monotonic() - started >= limits.max_seconds:
        return "time_budget"
    return None
