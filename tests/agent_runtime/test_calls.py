"""A step's tool calls end one by one: each result is appended to the transcript, closing its call, as that call
ends, while the step's other calls still run. A crash after some calls ended leaves open only the others, so the
resumed turn runs (or interrupts) just those and never runs an ended non-idempotent call twice. The worker is a
scripted fake (a real model cannot be made to call two tools at once); the transcript is SQL (SQLite, PostgreSQL)."""

from __future__ import annotations

import time

import pytest

from agent_runtime.events import ToolFinished, TurnDone
from agent_runtime.loop import AgentLoop, Limits
from agent_runtime.store.tables import STARTED, TOOL_RESULT
from agent_runtime.store.transcript import TranscriptStore, upgrade
from agent_runtime.tools import ToolRegistry
from foundation.clients.worker import Final, SessionInfo
from foundation.clients.worker import ToolCall as WorkerToolCall
from foundation.sql import make_engine, sessions

TENANT = "acme"
TWO_CALLS = Final("tool_calls", tool_calls=[WorkerToolCall("c1", "first", {"n": 1}),
                                            WorkerToolCall("c2", "second", {"n": 2})])
ANSWER = Final("stop", content="all done")


class Crash(BaseException):
    """The runtime dies while a call runs (not an error a tool returns: nothing in the loop catches it)."""


class ScriptedWorker:
    """One worker session whose generations reply, in turn, with the scripted finals; it records each step's input."""

    target = "scripted"

    def __init__(self, *replies: Final) -> None:
        self.replies, self.commit, self.inputs = list(replies), 0, []

    def create_session(self, *, system_prompt="", tools=None, think_max=False, session_id=None) -> SessionInfo:
        return self.get_session(session_id)

    def get_session(self, session_id) -> SessionInfo:
        return SessionInfo(session_id, tokens=10 * self.commit, commit=self.commit)

    def rewind(self, session_id, commit) -> None:
        self.commit = commit

    def generate(self, *, session_id, messages, mode=None, sampling=None, tool_choice=None):
        self.inputs.append(list(messages))
        self.commit += 1
        yield self.replies.pop(0)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = request.getfixturevalue("database_url") if request.param == "postgresql" else f"sqlite:///{tmp_path}/a.db"
    upgrade(url)
    engine = make_engine(url)
    yield TranscriptStore(sessions(engine))
    engine.dispose()


def results(store: TranscriptStore, session_id: str, step: int = 1) -> list[tuple[str, str]]:
    """The (call, content) of the tool results stored for a step, in the order appended."""
    return [(e.tool_call_id, e.content) for e in store.step_entries(TENANT, session_id, step) if e.kind == TOOL_RESULT]


def open_ids(store: TranscriptStore, session_id: str) -> list[str]:
    return [r.tool_call_id for r in store.open_calls(TENANT, session_id)]


def wait_until_closed(store: TranscriptStore, session_id: str, call_id: str, timeout: float = 10.0) -> None:
    """Inside a tool: wait (bounded) for another call of its step to be closed in the store."""
    deadline = time.monotonic() + timeout
    while call_id in open_ids(store, session_id) and time.monotonic() < deadline:
        time.sleep(0.01)


def a_loop(store: TranscriptStore, worker: ScriptedWorker, first, second, *, second_idempotent=False) -> AgentLoop:
    tools = ToolRegistry()
    tools.tool("first", idempotent=False)(first)
    tools.tool("second", idempotent=second_idempotent)(second)
    return AgentLoop(store, worker, tools)


def test_a_result_is_stored_as_its_call_ends_while_the_other_call_still_runs(store, request):
    session_id = f"ends-{request.node.callspec.id}"
    worker, seen = ScriptedWorker(TWO_CALLS, ANSWER), {}

    def first(n: int) -> str:
        return "first done"

    def second(n: int) -> str:
        wait_until_closed(store, session_id, "c1")
        seen["results"], seen["open"] = results(store, session_id), open_ids(store, session_id)
        return "second done"

    loop = a_loop(store, worker, first, second)
    loop.create_session(TENANT, session_id)
    events = list(loop.run_turn(TENANT, session_id, [{"role": "user", "content": "go"}], limits=Limits(max_steps=2)))
    # While the second call ran, the first's result was stored and only the second was open.
    assert seen == {"results": [("c1", "first done")], "open": ["c2"]}
    assert results(store, session_id) == [("c1", "first done"), ("c2", "second done")]
    assert [(e.call_id, e.content) for e in events if isinstance(e, ToolFinished)] == [
        ("c1", "first done"), ("c2", "second done")]
    assert isinstance(events[-1], TurnDone) and events[-1].reason == "answer"


def test_results_go_back_to_the_model_in_call_order_whatever_order_the_calls_end_in(store, request):
    session_id = f"order-{request.node.callspec.id}"
    worker = ScriptedWorker(TWO_CALLS, ANSWER)

    def first(n: int) -> str:
        wait_until_closed(store, session_id, "c2")
        return "first done"

    def second(n: int) -> str:
        return "second done"

    loop = a_loop(store, worker, first, second)
    loop.create_session(TENANT, session_id)
    events = list(loop.run_turn(TENANT, session_id, [{"role": "user", "content": "go"}], limits=Limits(max_steps=1)))
    assert results(store, session_id) == [("c2", "second done"), ("c1", "first done")]  # as they ended
    assert [(e.call_id, e.content) for e in events if isinstance(e, ToolFinished)] == [
        ("c1", "first done"), ("c2", "second done")]
    assert loop._last_results(loop.store.get(TENANT, session_id)) == [
        {"role": "tool", "tool_call_id": "c1", "content": "first done"},
        {"role": "tool", "tool_call_id": "c2", "content": "second done"}]


def test_a_crash_after_one_call_ended_reruns_only_the_call_that_had_not_ended(store, request):
    session_id = f"crash-{request.node.callspec.id}"
    worker, runs = ScriptedWorker(TWO_CALLS, ANSWER), {"first": 0, "second": 0}

    def first(n: int) -> str:  # not idempotent: a second run would charge twice
        runs["first"] += 1
        return "charged"

    def second(n: int) -> str:  # idempotent: re-run after the crash
        runs["second"] += 1
        if runs["second"] == 1:
            wait_until_closed(store, session_id, "c1")
            raise Crash("the runtime died while this call ran")
        return "shipped"

    loop = a_loop(store, worker, first, second, second_idempotent=True)
    loop.create_session(TENANT, session_id)
    with pytest.raises(Crash):
        list(loop.run_turn(TENANT, session_id, [{"role": "user", "content": "go"}], limits=Limits(max_steps=2)))
    assert results(store, session_id) == [("c1", "charged")]
    assert [(r.tool_call_id, r.call_status) for r in store.open_calls(TENANT, session_id)] == [("c2", STARTED)]

    # Another runtime continues the turn from SQL.
    resumed = a_loop(store, worker, first, second, second_idempotent=True)
    events = list(resumed.run_turn(TENANT, session_id, [], limits=Limits(max_steps=2)))
    assert runs == {"first": 1, "second": 2}
    assert [(e.call_id, e.status, e.content) for e in events if isinstance(e, ToolFinished)] == [
        ("c2", "finished", "shipped")]
    assert open_ids(store, session_id) == []
    assert worker.inputs[-1] == [{"role": "tool", "tool_call_id": "c1", "content": "charged"},
                                 {"role": "tool", "tool_call_id": "c2", "content": "shipped"}]
    assert isinstance(events[-1], TurnDone) and events[-1].reason == "answer"
