"""A turn of an agent: append the new input to the worker session, generate, run the tool calls, give the results back,
and loop until an answer, the step limit or a budget. SQL is the source of truth:

1. A step's input, reply and tool calls (started) are appended in one transaction with the worker session's commit
   that holds them. A worker session found ahead of that commit (the runtime died between the two) is rewound to it.
2. Each tool result is appended as it arrives and closes its call. A call still open when the runtime restarts is
   re-run with its idempotency key if its tool is idempotent; otherwise it ends "interrupted".
3. The next step's input is the results of the last step's calls, read through the step index: a turn's work is
   proportional to what it adds, never to the history.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent_runtime.policy import THINK_HIGH, DefaultPolicy, ModeDecision, ModePolicy, OperatorLimits, TurnSignals
from agent_runtime.store.models import ASSISTANT, FINISHED, INTERRUPTED, TOOL_CALL, TOOL_RESULT, USER
from agent_runtime.store.transcript import Entry, TranscriptStore
from agent_runtime.tools import ToolCall, ToolRegistry
from model_worker.client import Delta, Final, Sampling, WorkerClient
from model_worker.client import Tool as WorkerTool
from model_worker.client import convert as wconvert
from protos.dsv4.jobs.v1 import jobs_pb2
from protos.dsv4.worker.v1 import worker_pb2
from services.jobs.client import JobsClient


@dataclass
class Limits:
    max_steps: int = 16
    max_completion_tokens: int | None = None
    max_seconds: float | None = None


@dataclass
class ModeChosen:
    mode: str
    reason: str
    via_job: bool


@dataclass
class JobStatus:
    batch_id: str
    status: str  # queued, running, completed, failed...
    tokens: int


@dataclass
class StepStarted:
    step: int
    mode: str


@dataclass
class TextDelta:
    text: str
    reasoning: bool


@dataclass
class ToolStarted:
    call_id: str
    name: str
    arguments: Any


@dataclass
class ToolFinished:
    call_id: str
    name: str
    content: str
    is_error: bool
    status: str  # finished, interrupted


@dataclass
class TurnDone:
    reason: str  # answer, step_limit, token_budget, time_budget
    content: str
    reasoning: str
    steps: int
    usage: dict[str, int] = field(default_factory=dict)


@dataclass
class Reply:
    """One step's reply, from the worker directly or from a Think Max job."""

    content: str
    reasoning: str
    calls: list[ToolCall]
    usage: dict[str, int]
    worker_session_id: str | None = None  # a job's reply lives in its own session: the agent moves there


TurnEvent = ModeChosen | JobStatus | StepStarted | TextDelta | ToolStarted | ToolFinished | TurnDone
_USAGE = ("prompt_tokens", "prefilled_tokens", "reused_tokens", "completion_tokens", "reasoning_tokens")


class AgentLoop:
    def __init__(self, store: TranscriptStore, client: WorkerClient, tools: ToolRegistry,
                 jobs: JobsClient | None = None, policy: ModePolicy | None = None,
                 operator: OperatorLimits | None = None, job_poll_s: float = 0.2) -> None:
        self.store, self.client, self.tools, self.jobs = store, client, tools, jobs
        self.policy, self.operator = policy or DefaultPolicy(), operator or OperatorLimits()
        self.job_poll_s = job_poll_s

    def create_session(self, tenant: str, session_id: str, system_prompt: str = "", think_max: bool = False) -> None:
        """An agent session and its worker session (system prompt and tools fixed there, prefilled once)."""
        tools = [WorkerTool(t.name, t.description, t.parameters) for t in self.tools.all()]
        info = self.client.create_session(system_prompt=system_prompt, tools=tools, think_max=think_max,
                                          session_id=f"agent-{session_id}")
        self.store.create(tenant, session_id, system_prompt, self.tools.schemas(), info.session_id, think_max)
        self.store.set_worker(tenant, session_id, info.session_id, info.commit)

    def run_turn(self, tenant: str, session_id: str, messages: Sequence[dict[str, Any]], *, mode: str | None = None,
                 difficulty: str | None = None, limits: Limits | None = None, sampling: Sampling | None = None,
                 first_tool_choice: str | None = None) -> Iterator[TurnEvent]:
        """Run a turn: `mode` (non-think, think-high, think-max) wins when given; otherwise the policy picks one
        from `difficulty` and the session. A Think Max turn's first step runs as a job on the jobs service."""
        limits = limits or Limits()
        session = self.store.get(tenant, session_id)
        self._align_worker(session)
        inputs = [*(yield from self._pending_results(tenant, session)), *messages]
        decision = self._decide(session, mode, difficulty, limits)
        yield ModeChosen(decision.mode, decision.reason, decision.via_job)
        usage = dict.fromkeys(_USAGE, 0)
        started, tool_choice, via_job = time.monotonic(), first_tool_choice, decision.via_job
        for number in range(1, limits.max_steps + 1):
            yield StepStarted(session.steps + 1, decision.mode)
            if via_job:
                reply = yield from self._job_step(session, inputs, sampling)
                via_job = False  # the rest of the turn runs on the Think Max session the job left
            else:
                reply = yield from self._step(session, inputs, decision.mode, sampling, tool_choice)
            for name in _USAGE:
                usage[name] += reply.usage.get(name, 0)
            worker_session_id = reply.worker_session_id or session.worker_session_id
            info = self.client.get_session(worker_session_id)
            step = session.steps + 1
            entries = [Entry(USER, m.get("content") or "") for m in inputs if m.get("role") == "user"]
            entries.append(Entry(ASSISTANT, reply.content, reply.reasoning or None))
            entries += [Entry(TOOL_CALL, tool_call_id=c.id, tool_name=c.name, arguments=c.arguments,
                              idempotency_key=f"{session_id}/{step}/{c.id}") for c in reply.calls]
            self.store.append_step(tenant, session_id, entries, worker_session_id=worker_session_id,
                                   worker_commit=info.commit)
            session = self.store.get(tenant, session_id)
            calls = reply.calls
            if not calls:
                yield TurnDone("answer", reply.content, reply.reasoning, number, usage)
                return
            for call in calls:
                yield ToolStarted(call.id, call.name, call.arguments)
            inputs = []
            keys = [f"{session_id}/{step}/{c.id}" for c in calls]
            for call, result in zip(calls, asyncio.run(self.tools.run_calls(calls, keys))):
                self.store.finish_call(tenant, session_id, call.id, Entry(TOOL_RESULT, result.content,
                                                                          is_error=result.is_error))
                yield ToolFinished(call.id, call.name, result.content, result.is_error, FINISHED)
                inputs.append({"role": "tool", "tool_call_id": call.id, "content": result.content})
            tool_choice = None
            over = _over_budget(limits, usage, started)
            if over:
                yield TurnDone(over, "", "", number, usage)
                return
        yield TurnDone("step_limit", "", "", limits.max_steps, usage)

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

    def _step(self, session, inputs: list[dict], mode: str, sampling: Sampling | None, tool_choice: str | None):
        """A step on the agent's worker session: streams its text, returns its Reply."""
        final = None
        for event in self.client.generate(session_id=session.worker_session_id, messages=list(inputs), mode=mode,
                                          sampling=sampling, tool_choice=tool_choice):
            if isinstance(event, Delta) and event.text:
                yield TextDelta(event.text, event.reasoning)
            elif isinstance(event, Final):
                final = event
        return Reply(final.content, final.reasoning_content, [ToolCall(c.id, c.name, c.arguments)
                                                              for c in final.tool_calls],
                     {name: getattr(final.usage, name) for name in _USAGE})

    def _job_step(self, session, inputs: list[dict], sampling: Sampling | None):
        """A Think Max step as an interactive job on the agent's worker session (a fork if it is Think Max, a Think
        Max copy of its transcript otherwise): streams the job's status, returns its Reply."""
        request = jobs_pb2.JobRequest(custom_id="turn", messages=[wconvert.message_to_proto(m) for m in inputs],
                                      mode=worker_pb2.THINK_MAX, session_id=session.worker_session_id,
                                      sampling=wconvert.sampling_to_proto(sampling or Sampling()))
        batch = self.jobs.submit([request], interactive=True)
        last = None
        while self.jobs.get(batch.id).status not in ("completed", "failed", "expired", "cancelled"):
            progress = self.jobs.progress(batch.id).requests
            status = (progress[0].status, progress[0].tokens) if progress else ("queued", 0)
            if status != last:
                yield JobStatus(batch.id, *status)
                last = status
            time.sleep(self.job_poll_s)
        [line] = list(self.jobs.results(batch.id))
        yield JobStatus(batch.id, line.status, line.usage.completion_tokens)
        if line.status != "completed":
            raise RuntimeError(f"the Think Max job {batch.id} ended {line.status}: {line.error_message}")
        response = json.loads(line.response_json)
        message = response["choices"][0]["message"]
        calls = [ToolCall(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
                 for c in message.get("tool_calls") or []]
        usage = response["usage"]
        return Reply(message.get("content") or "", message.get("reasoning_content") or "", calls,
                     {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"],
                      "reused_tokens": usage["prompt_tokens_details"]["cached_tokens"],
                      "reasoning_tokens": usage["completion_tokens_details"]["reasoning_tokens"]},
                     worker_session_id=response.get("session_id"))

    def _align_worker(self, session) -> None:
        """SQL decides: a worker session that committed past the last recorded step is rewound to it."""
        info = self.client.get_session(session.worker_session_id)
        if session.worker_commit is not None and info.commit != session.worker_commit:
            self.client.rewind(session.worker_session_id, session.worker_commit)

    def _pending_results(self, tenant: str, session):
        """The results the model has not seen: those of the last step's calls (returned). Calls left open by a crash
        are re-run (idempotent tools, same key) or end interrupted (streamed as they end)."""
        for call in self.store.open_calls(session.id):
            tool = self.tools.get(call.tool_name)
            if tool is not None and tool.idempotent:
                [result] = asyncio.run(self.tools.run_calls(
                    [ToolCall(call.tool_call_id, call.tool_name, call.arguments)], [call.idempotency_key]))
                content, is_error, status = result.content, result.is_error, FINISHED
            else:
                content = json.dumps({"error": "interrupted: the runtime stopped while this call ran, and it was "
                                               "not run again (the tool is not idempotent)"})
                is_error, status = True, INTERRUPTED
            self.store.finish_call(tenant, session.id, call.tool_call_id, Entry(TOOL_RESULT, content,
                                                                                is_error=is_error), status)
            yield ToolFinished(call.tool_call_id, call.tool_name, content, is_error, status)
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
