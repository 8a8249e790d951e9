"""A turn of an agent: append the new input to the worker session, generate, run the tool calls, give the results back,
and loop until an answer, the step limit, a budget or a cancel. SQL is the source of truth:

1. A step's input, reply and tool calls are appended in one transaction with the worker session's commit that holds
   them. A worker session found ahead of that commit (the runtime died between the two) is rewound to it.
2. Each tool result is appended as its call ends, the step's other calls still running, and closes its call. A call
   still open when the runtime restarts is re-run with its idempotency key if its tool is idempotent, else ends
   "interrupted"; a call that had ended is never run again.
3. A call of a tool that requires approval waits for a human's decision, the turn paused and the worker session held;
   a decision made after a restart is picked up by whichever runtime continues the turn.
4. The next step's input is the results of the last step's calls, read through the step index: a turn's work is
   proportional to what it adds, never to the history.
5. A worker session that is gone (expired after `session_ttl_hours` idle, or deleted: NOT_FOUND) is rebuilt from the
   transcript, at most once a step, and the turn goes on on the new one.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace

from agent_runtime.calls import OpenCall, TurnContext, TurnControl, open_calls, settle_calls
from agent_runtime.compaction import Compactor, Rebuilder
from agent_runtime.events import (
    USAGE_NAMES,
    ModeChosen,
    StepReply,
    StepStarted,
    TextDelta,
    TurnDone,
    TurnEvent,
    TurnUsage,
)
from agent_runtime.store.tables import ASSISTANT, AWAITING, STARTED, TOOL_CALL, TOOL_RESULT, USER, AgentSession
from agent_runtime.store.transcript import AgentSessionExists, Entry, TranscriptStore
from agent_runtime.think_max import job_step
from agent_runtime.tools import ToolCall, ToolRegistry
from agent_runtime.tools.mcp import McpServers
from agent_runtime.tools.mcp_config import STORED_KEY, UnknownMcpServer
from foundation.chat.protocol import DSML
from foundation.clients.jobs import JobsClient
from foundation.clients.worker import Delta, Final, Sampling, WorkerClient
from foundation.clients.worker import Tool as WorkerTool
from foundation.clients.worker.errors import NotFound, Unavailable
from foundation.mode_policy import THINK_HIGH, DefaultPolicy, ModeDecision, ModePolicy, OperatorLimits, TurnSignals
from foundation.registry import WorkerPool

tracer = trace.get_tracer("agent_runtime")
log = logging.getLogger(__name__)


@dataclass
class Limits:
    max_steps: int = 16
    max_completion_tokens: int | None = None
    max_seconds: float | None = None


# The tools offered to a session: one registry for all, or one built per session (tenant, session ID), e.g. with
# its own memory namespace. A session uses those it chose at creation.
ToolSource = ToolRegistry | Callable[[str, str], ToolRegistry]


class AgentLoop:
    def __init__(self, store: TranscriptStore, workers: WorkerPool[WorkerClient] | WorkerClient, tools: ToolSource,
                 jobs: JobsClient | None = None, policy: ModePolicy | None = None,
                 operator: OperatorLimits | None = None, compactor: Compactor | None = None,
                 job_poll_s: float = 0.2, mcp: McpServers | None = None) -> None:
        self.workers = workers if isinstance(workers, WorkerPool) else WorkerPool.of(workers)
        self.store, self.tools, self.jobs = store, tools, jobs
        self.policy, self.operator, self.compactor = policy or DefaultPolicy(), operator or OperatorLimits(), compactor
        # A lost worker session is rebuilt with the compaction policy when there is one, else whole.
        self.rebuilder = compactor if compactor is not None else Rebuilder(store, self.workers)
        self.job_poll_s = job_poll_s
        self.mcp = mcp  # the tenants' MCP servers, whose tools a session may add to the offered ones

    @property
    def client(self) -> WorkerClient:
        """The first worker's client (a runtime of one worker, tests)."""
        return next(iter(self.workers.clients.values()))

    def offered_tools(self, tenant: str, session_id: str) -> ToolRegistry:
        return self.tools(tenant, session_id) if callable(self.tools) else self.tools

    def session_tools(self, session: AgentSession) -> ToolRegistry:
        offered, names = self.offered_tools(session.tenant, session.id), [t["function"]["name"] for t in session.tools]
        if self.mcp is None or not any(STORED_KEY in tool for tool in session.tools):
            return offered.only(names)
        # Its MCP tools as it was created with them (no server is reached here: one that is down fails its calls).
        chosen = offered.only([name for name in names if offered.get(name) is not None])
        for tool in self.mcp.session_tools(session.tenant, session.tools):
            chosen.add(tool)
        return chosen.only(names)

    def create_session(self, tenant: str, session_id: str, system_prompt: str = "", think_max: bool = False,
                       tools: Sequence[str] | None = None, mcp_servers: Sequence[str] = ()) -> AgentSession:
        """An agent session and its worker session (system prompt and tools fixed there, prefilled once), on the
        least loaded worker. `tools` names those of the offered tools it uses (all when None); every tool of the
        tenant's MCP servers named in `mcp_servers` joins them (each server reached now: UnknownMcpServer,
        McpServerUnavailable)."""
        offered = self.offered_tools(tenant, session_id)
        chosen = offered.only([t.name for t in offered.all()] if tools is None else tools)
        if self.store.exists(tenant, session_id):  # before a worker session is made for it
            raise AgentSessionExists(f"agent session {session_id} exists")
        if mcp_servers and self.mcp is None:
            raise UnknownMcpServer("mcp_servers: this runtime has no MCP servers")
        listed = self.mcp.list_tools(tenant, mcp_servers) if mcp_servers else []
        stored = [*chosen.schemas(), *(entry.stored() for entry in listed)]
        for entry in listed:
            chosen.add(entry.tool)  # ValueError when one of the service's tools has its name
        address, client = self.workers.connect()
        info = client.create_session(
            system_prompt=system_prompt, tools=[WorkerTool(t.name, t.description, t.parameters) for t in chosen.all()],
            think_max=think_max, session_id=worker_session_name())
        self.workers.placed(info.session_id, address)
        try:
            self.store.create(tenant, session_id, system_prompt, stored, info.session_id, think_max)
        except AgentSessionExists:  # a concurrent create of the same ID won: its worker session is the one kept
            client.delete_session(info.session_id)
            raise
        self.store.set_worker(tenant, session_id, info.session_id, info.commit, address)
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
            # Current while the turn runs (its caller drives this generator on one thread): the worker and jobs
            # calls it makes are the turn's children.
            with trace.use_span(span, end_on_exit=False):
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
        address, client = self.workers.connect(session.worker_session_id, hint=session.worker_address)
        turn = TurnContext(tenant, client, self.session_tools(session), control, address)
        session = yield from self._attach(turn, session)
        if not (yield from settle_calls(self.store, turn, session, open_calls(self.store, session), True)):
            return (yield from _done(TurnDone("cancelled", "", "", 0)))
        inputs = [*self._last_results(session), *messages]
        if self.compactor is not None and not turn.rebuilt_step:  # a rebuild just applied its policy
            tokens = turn.client.get_session(session.worker_session_id).tokens
            compacted = self.compactor.maybe_compact(tenant, session, tokens)
            if compacted is not None:
                yield compacted
                session = self.store.get(tenant, session_id)
        decision = self._decide(turn, session, mode, difficulty, limits)
        span.set_attributes({"agent.mode": decision.mode, "agent.mode_reason": decision.reason,
                             "agent.via_job": decision.via_job})
        yield ModeChosen(decision.mode, decision.reason, decision.via_job)
        usage = TurnUsage()
        started, via_job = time.monotonic(), decision.via_job
        for number in range(1, limits.max_steps + 1):
            if control.cancelled():
                return (yield from _done(TurnDone("cancelled", "", "", number - 1, usage)))
            yield StepStarted(session.steps + 1, decision.mode)
            if via_job:
                reply = yield from job_step(self.jobs, session.worker_session_id, inputs, sampling,
                                            control.cancelled, self.job_poll_s)
                via_job = False  # the rest of the turn runs on the Think Max session the job left
            else:
                reply, session = yield from self._step_anywhere(turn, session, inputs, decision.mode, sampling,
                                                                tool_choice)
            if reply is None:
                return (yield from _done(TurnDone("cancelled", "", "", number - 1, usage)))
            for name in USAGE_NAMES:
                setattr(usage, name, getattr(usage, name) + reply.usage.get(name, 0))
            session = self._record_step(turn, session, inputs, reply, decision.mode)
            if not reply.calls and reply.finish_reason == "length":  # cut short: no answer, maybe half a call
                return (yield from _done(TurnDone(_over_budget(limits, usage, started) or "length",
                                                  _before_calls(reply.content), reply.reasoning, number, usage)))
            if not reply.calls:
                return (yield from _done(TurnDone("answer", reply.content, reply.reasoning, number, usage)))
            fresh = [OpenCall(c.id, c.name, c.arguments, AWAITING if turn.needs_approval(c.name) else STARTED,
                              idempotency_key(session, session.steps, c.id)) for c in reply.calls]
            if not (yield from settle_calls(self.store, turn, session, fresh, False)):
                return (yield from _done(TurnDone("cancelled", "", "", number, usage)))
            inputs, tool_choice = self._last_results(session), None
            over = _over_budget(limits, usage, started)
            if over:
                return (yield from _done(TurnDone(over, "", "", number, usage)))
        return (yield from _done(TurnDone("step_limit", "", "", limits.max_steps, usage)))

    def _record_step(self, turn: TurnContext, session, inputs, reply: StepReply, mode):
        worker_session_id = reply.job_session or session.worker_session_id
        info = turn.client.get_session(worker_session_id)
        step = session.steps + 1
        entries = [Entry(USER, m.get("content") or "") for m in inputs if m.get("role") == "user"]
        entries.append(Entry(ASSISTANT, reply.content, reply.reasoning or None))
        entries += [Entry(TOOL_CALL, tool_call_id=c.id, tool_name=c.name, arguments=c.arguments,
                          idempotency_key=idempotency_key(session, step, c.id),
                          awaits_approval=turn.needs_approval(c.name))
                    for c in reply.calls]
        self.store.append_step(turn.tenant, session.id, entries, worker_session_id=worker_session_id,
                               worker_commit=info.commit, mode=mode, turn_id=turn.control.turn_id)
        return self.store.get(turn.tenant, session.id)

    def _decide(self, turn: TurnContext, session, mode: str | None, difficulty: str | None,
                limits: Limits) -> ModeDecision:
        info = turn.client.get_session(session.worker_session_id)
        decision = self.policy.choose(TurnSignals(
            requested_mode=mode, difficulty=difficulty, tool_count=len(turn.tools.all()),
            prior_failures=session.failures, remaining_tokens=limits.max_completion_tokens,
            context_tokens=info.tokens, session_think_max=info.think_max), self.operator)
        if decision.via_job and self.jobs is None:  # no queue to run it on
            if info.think_max:
                return ModeDecision(decision.mode, decision.reason + "; run directly (no jobs service)")
            return ModeDecision(THINK_HIGH, decision.reason + "; but there is no jobs service to run Think Max")
        return decision

    def _step(self, turn: TurnContext, session, inputs: list[dict], mode: str, sampling: Sampling | None,
              tool_choice: str | None):
        """A step on the agent's worker session: streams its text; returns the reply, or None when cancelled
        (closing the stream cancels the generation)."""
        final = None
        events = turn.client.generate(session_id=session.worker_session_id, messages=list(inputs), mode=mode,
                                      sampling=sampling, tool_choice=tool_choice)
        try:
            for event in events:
                if turn.control.cancelled():
                    return None
                if isinstance(event, Delta) and event.text:
                    yield TextDelta(event.text, event.reasoning)
                elif isinstance(event, Final):
                    final = event
        finally:
            events.close()
        return StepReply(final.content, final.reasoning_content, [ToolCall(c.id, c.name, c.arguments)
                                                                  for c in final.tool_calls],
                         {name: getattr(final.usage, name) for name in USAGE_NAMES}, final.finish_reason)

    def _step_anywhere(self, turn: TurnContext, session, inputs: list[dict], mode: str, sampling: Sampling | None,
                       tool_choice: str | None):
        """The step on the session's worker; if that worker is lost mid-step, again from the last commit on another;
        if the worker session is gone, again on one rebuilt (StepStarted is sent again: the text streamed since the
        last one is void). Returns the reply and the session as it now is."""
        while True:
            try:
                return (yield from self._step(turn, session, inputs, mode, sampling, tool_choice)), session
            except Unavailable:
                self._move(turn, session)
                session = yield from self._attach(turn, session)
            except NotFound as gone:
                session = yield from self._rebuild(turn, session, gone)
            yield StepStarted(session.steps + 1, mode)

    def _attach(self, turn: TurnContext, session):
        """Bring the worker session to the last recorded commit, on another worker if this one is gone, or rebuilt
        from the transcript if the session is gone. Returns the session as it now is."""
        while True:
            try:
                self._align_worker(turn, session)
                return session
            except Unavailable:
                self._move(turn, session)
            except NotFound as gone:
                session = yield from self._rebuild(turn, session, gone)

    def _rebuild(self, turn: TurnContext, session, gone: NotFound):
        """A new worker session from the transcript, on the turn's worker (alive: it answered NOT_FOUND); `gone`
        raised when this step already had one, so a session that keeps vanishing fails the turn rather than loop."""
        step = session.steps + 1
        if turn.rebuilt_step == step:
            raise gone
        log.warning("worker session %s of %s is gone (expired or deleted); rebuilding it from the transcript",
                    session.worker_session_id, session.id)
        turn.rebuilt_step = step
        yield self.rebuilder.rebuild(turn.tenant, session, turn.client, turn.address)
        return self.store.get(turn.tenant, session.id)

    def _move(self, turn: TurnContext, session) -> None:
        """The turn's worker failed UNAVAILABLE: route the session to another live worker (NoWorker when none is
        left), which resumes it from the shared warm or cold tier."""
        self.workers.lost(turn.address)
        turn.tried.add(turn.address)
        log.warning("worker %s lost during a turn of %s; moving it", turn.address, session.id)
        turn.address, turn.client = self.workers.connect(session.worker_session_id, exclude=turn.tried)
        self.store.set_worker(turn.tenant, session.id, session.worker_session_id, session.worker_commit,
                              turn.address)

    @staticmethod
    def _align_worker(turn: TurnContext, session) -> None:
        """SQL decides: a worker session that committed past the last recorded step is rewound to it."""
        info = turn.client.get_session(session.worker_session_id)
        if session.worker_commit is not None and info.commit != session.worker_commit:
            turn.client.rewind(session.worker_session_id, session.worker_commit)

    def _last_results(self, session) -> list[dict[str, Any]]:
        """The results of the last step's calls: what the model reads next, in call order (not the order they ended)."""
        session = self.store.get(session.tenant, session.id)
        if not session.steps:
            return []
        last = self.store.step_entries(session.tenant, session.id, session.steps)
        order = {e.tool_call_id: i for i, e in enumerate(e for e in last if e.kind == TOOL_CALL)}
        if not order:
            return []
        results = sorted((e for e in last if e.kind == TOOL_RESULT), key=lambda e: order.get(e.tool_call_id, 0))
        return [{"role": "tool", "tool_call_id": e.tool_call_id, "content": e.content} for e in results]


def worker_session_name() -> str:
    """A fresh worker session ID: not derived from the agent session's, whose IDs (and the suffixes compaction
    adds) could then collide, or run past the worker's 128 characters. Random, so no two agent sessions share one
    whatever their tenants (agent session IDs are per tenant; the registry routes worker sessions by ID alone)."""
    return f"agent-{uuid.uuid4().hex}"


def idempotency_key(session: AgentSession, step: int, call_id: str) -> str:
    """A tool call's idempotency key: unique across tenants too, since a plugin may keep its keys in one table for
    every caller (the same agent session ID in two tenants is two sessions)."""
    return f"{session.tenant}/{session.id}/{step}/{call_id}"


def _done(done: TurnDone):
    yield done
    return done


def _before_calls(content: str) -> str:
    """A reply's text before the tool-call block it began (the block cut short is not an answer)."""
    return content.split(f"<{DSML}")[0].rstrip() if DSML in content else content


def _over_budget(limits: Limits, usage: TurnUsage, started: float) -> str | None:
    if limits.max_completion_tokens is not None and usage.completion_tokens >= limits.max_completion_tokens:
        return "token_budget"
    if limits.max_seconds is not None and time.monotonic() - started >= limits.max_seconds:
        return "time_budget"
    return None
