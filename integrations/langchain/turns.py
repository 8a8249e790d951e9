"""One call of the chat model on a worker, blocking or asyncio: stateless (the whole history each time; the worker's
prefix cache still reuses what an earlier request computed), or a turn on the thread's worker session as
sessions.py plans it (continue, fork at a commit, create), falling back when the worker refuses the plan's start.
Both yield the worker's events, Delta / ToolCall and the Final last, and record the reply on the branch."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from foundation.clients.worker import (
    AsyncWorkerClient,
    Event,
    FailedPrecondition,
    Final,
    Message,
    NotFound,
    Sampling,
    Tool,
    Unavailable,
    WorkerClient,
)
from foundation.clients.worker.types import Mode
from foundation.registry.pool import NoWorker, WorkerPool
from integrations.langchain import convert
from integrations.langchain.sessions import Head, Plan, ThreadSessions

_STARTS = {"continue": "continued", "fork": "forked", "create": "created"}


@dataclass
class Call:
    """One call in the worker's terms; `thread_id` None: stateless."""

    conversation: convert.Conversation
    sampling: Sampling
    tools: list[Tool] = field(default_factory=list)
    tool_choice: str | None = None
    response_format: dict[str, Any] | None = None
    mode: Mode | None = None
    thread_id: str | None = None

    @property
    def on_session(self) -> bool:
        return self.thread_id is not None and self.conversation.fits_a_session

    @property
    def head(self) -> Head:
        return Head(self.conversation.system_prompt, self.tools, self.response_format, self.mode == "think-max")

    def stateless_args(self) -> dict[str, Any]:
        system = [Message("system", self.conversation.system_prompt)] if self.conversation.system_prompt else []
        return {"messages": system + self.conversation.messages, "tools": self.tools or None, "mode": self.mode,
                "sampling": self.sampling, "tool_choice": self.tool_choice, "response_format": self.response_format}

    def head_args(self) -> dict[str, Any]:
        head = self.head
        return {"system_prompt": head.system_prompt, "tools": head.tools, "think_max": head.think_max,
                "response_format": head.response_format}

    def turn_args(self, plan: Plan) -> dict[str, Any]:
        """A turn sends only what the session lacks; its tools and response format are the session's own."""
        return {"session_id": plan.branch.session_id, "messages": plan.new_messages, "mode": self.mode,
                "sampling": self.sampling, "tool_choice": self.tool_choice, "expected_commit": plan.expected_commit}


@dataclass
class TurnInfo:
    """Where a call ran, filled in as it starts: the worker session (none for a stateless call) and how the call
    got it (continued, forked, created)."""

    session_id: str = ""
    start: str = ""
    address: str = ""  # the worker it went to
    plan: Plan | None = None  # the plan it runs on (each fallback replaces it)

    def started(self, plan: Plan, first: Event) -> Event:
        self.session_id, self.start = plan.branch.session_id, _STARTS[plan.action]
        return first

    def metadata(self) -> dict[str, str]:
        return {"session_id": self.session_id, "session_start": self.start} if self.session_id else {}


def _affinity(call: Call) -> str:
    """Requests of one conversation go to one worker, whose prefix cache (or session) holds what they share."""
    opening = call.conversation.messages[0].content if call.conversation.messages else ""
    return call.thread_id or f"{call.conversation.system_prompt}\0{opening[:4096]}"


@contextlib.contextmanager
def _routing(pool: WorkerPool, info: TurnInfo) -> Iterator[None]:
    """A worker that failed UNAVAILABLE is routed around for a while (the caller's retry goes elsewhere)."""
    try:
        yield
    except Unavailable as error:
        if info.address and not isinstance(error, NoWorker):
            pool.lost(info.address)
        raise


class BlockingTurns:
    """Calls over the blocking client; `events` yields the worker's events and records a session turn's reply."""

    def __init__(self, pool: WorkerPool[WorkerClient], sessions: ThreadSessions) -> None:
        self.pool, self.sessions = pool, sessions

    def events(self, call: Call, info: TurnInfo) -> Iterator[Event]:
        with _routing(self.pool, info):
            if not call.on_session:
                info.address, client = self.pool.connect(affinity=_affinity(call))
                yield from client.generate(**call.stateless_args())
                return
            info.plan = self.sessions.plan(call.thread_id, call.head, call.conversation.messages)
            try:
                plan, client, events, first = self._start(call, info)
                with contextlib.closing(events):
                    yield first
                    final = first
                    for final in events:
                        yield final
                assert isinstance(final, Final), "the client raises for a stream without its Final"
                if final.finish_reason != "cancelled":  # a cancelled reply is not committed: nothing to record
                    commit = client.get_session(plan.branch.session_id).commit
                    self.sessions.finished(plan, convert.reply_message(final), commit, info.address)
            finally:
                self.sessions.release(info.plan)  # a no-op once finished

    def _start(self, call: Call, info: TurnInfo) -> tuple[Plan, WorkerClient, Iterator[Event], Event]:
        """The call running on the plan's session, its first event in hand: a start the worker refuses (the session
        moved on, expired, lost the commit) falls back to the next plan."""
        while True:
            plan = info.plan
            try:
                if plan.action == "create":
                    info.address, client = self.pool.connect(affinity=_affinity(call))
                    session = client.create_session(**call.head_args())
                else:
                    info.address, client = self.pool.connect(plan.branch.session_id, hint=plan.branch.address)
                    if plan.action == "continue":
                        events = client.generate(**call.turn_args(plan))
                        return plan, client, events, info.started(plan, next(events))
                    session = client.fork(plan.branch.session_id, plan.commit)
            except (FailedPrecondition, NotFound) as error:
                info.plan = self.sessions.fallback(plan, error, session_gone=isinstance(error, NotFound))
                continue
            self.pool.placed(session.session_id, info.address)
            self.sessions.started(plan, session.session_id, info.address, session.commit)
            events = client.generate(**call.turn_args(plan))
            return plan, client, events, info.started(plan, next(events))


class AsyncTurns:
    """BlockingTurns over the asyncio client, step for step."""

    def __init__(self, pool: WorkerPool[AsyncWorkerClient], sessions: ThreadSessions) -> None:
        self.pool, self.sessions = pool, sessions

    async def events(self, call: Call, info: TurnInfo) -> AsyncIterator[Event]:
        with _routing(self.pool, info):
            if not call.on_session:
                info.address, client = self.pool.connect(affinity=_affinity(call))
                async with contextlib.aclosing(client.generate(**call.stateless_args())) as events:
                    async for event in events:
                        yield event
                return
            info.plan = self.sessions.plan(call.thread_id, call.head, call.conversation.messages)
            try:
                plan, client, events, first = await self._start(call, info)
                async with contextlib.aclosing(events):
                    yield first
                    final = first
                    async for final in events:
                        yield final
                assert isinstance(final, Final), "the client raises for a stream without its Final"
                if final.finish_reason != "cancelled":
                    commit = (await client.get_session(plan.branch.session_id)).commit
                    self.sessions.finished(plan, convert.reply_message(final), commit, info.address)
            finally:
                self.sessions.release(info.plan)

    async def _start(self, call: Call, info: TurnInfo) -> tuple[Plan, AsyncWorkerClient, AsyncIterator[Event], Event]:
        while True:
            plan = info.plan
            try:
                if plan.action == "create":
                    info.address, client = self.pool.connect(affinity=_affinity(call))
                    session = await client.create_session(**call.head_args())
                else:
                    info.address, client = self.pool.connect(plan.branch.session_id, hint=plan.branch.address)
                    if plan.action == "continue":
                        events = client.generate(**call.turn_args(plan))
                        return plan, client, events, info.started(plan, await anext(events))
                    session = await client.fork(plan.branch.session_id, plan.commit)
            except (FailedPrecondition, NotFound) as error:
                info.plan = self.sessions.fallback(plan, error, session_gone=isinstance(error, NotFound))
                continue
            self.pool.placed(session.session_id, info.address)
            self.sessions.started(plan, session.session_id, info.address, session.commit)
            events = client.generate(**call.turn_args(plan))
            return plan, client, events, info.started(plan, await anext(events))
