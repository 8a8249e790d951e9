"""The turn loop against a real model worker (`tiny`, random weights) and SQLite: the first step is forced to call a
tool through the worker's constrained decoding, the tool runs, its result goes back, and the transcript holds every
step; a crash between the worker's commit and the transcript's is healed by rewinding the worker session, and an
open call left by a crash ends interrupted or is re-run."""

from __future__ import annotations

import pytest
from realparts import tiny_worker_in_process

from agent_runtime.events import ToolFinished, ToolStarted, TurnDone
from agent_runtime.loop import AgentLoop, Limits
from agent_runtime.store.tables import INTERRUPTED, TOOL_CALL
from agent_runtime.store.transcript import Entry, TranscriptStore, upgrade
from agent_runtime.tools import ToolRegistry
from foundation.chat.protocol import DSML
from foundation.clients.worker import Sampling, WorkerClient
from foundation.sql import make_engine, sessions


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    with tiny_worker_in_process(tmp_path_factory.mktemp("agent-worker")) as worker:
        yield worker.address


@pytest.fixture
def loop(worker, tmp_path):
    url = f"sqlite:///{tmp_path}/agent.db"
    upgrade(url)
    tools, ran = ToolRegistry(), []

    @tools.tool(idempotent=False)
    def pick(color: str) -> str:
        """Pick a color."""
        ran.append(color)
        return f"picked {color}"

    tools.get("pick").parameters["properties"]["color"]["enum"] = ["red", "blue"]
    client = WorkerClient(worker, timeout=120)
    agent = AgentLoop(TranscriptStore(sessions(make_engine(url))), client, tools)
    agent.ran = ran
    yield agent
    client.close()


SAMPLING = Sampling(temperature=0.0, max_tokens=60)  # room for a whole call


def test_a_turn_calls_a_tool_and_records_every_step(loop):
    loop.create_session("acme", "a1", system_prompt="use tools")
    events = list(loop.run_turn("acme", "a1", [{"role": "user", "content": "pick one"}], sampling=SAMPLING,
                                first_tool_choice="pick", limits=Limits(max_steps=2)))
    started = [e for e in events if isinstance(e, ToolStarted)]
    finished = [e for e in events if isinstance(e, ToolFinished)]
    assert started and started[0].name == "pick" and started[0].arguments["color"] in ("red", "blue")
    assert finished[0].content.startswith("picked ") and loop.ran
    done = events[-1]
    assert isinstance(done, TurnDone) and done.reason in ("answer", "length", "step_limit")
    session = loop.store.get("acme", "a1")
    first = loop.store.step_entries("acme", "a1", 1)
    assert [e.kind for e in first][:3] == ["user", "assistant", "tool_call"] and first[-1].kind == "tool_result"
    assert session.worker_commit == loop.client.get_session(session.worker_session_id).commit


def test_a_step_cut_inside_its_tool_call_ends_the_turn_as_cut_short(loop):
    loop.create_session("acme", "a-cut")
    events = list(loop.run_turn("acme", "a-cut", [{"role": "user", "content": "pick one"}], first_tool_choice="pick",
                                sampling=Sampling(temperature=0.0, max_tokens=6), limits=Limits(max_steps=3)))
    done = events[-1]
    assert isinstance(done, TurnDone) and done.reason == "length" and done.steps == 1
    assert DSML not in done.content and not any(isinstance(e, ToolStarted) for e in events) and not loop.ran
    assert DSML in loop.store.step_entries("acme", "a-cut", 1)[1].content  # the transcript keeps what was written
    budget = list(loop.run_turn("acme", "a-cut", [{"role": "user", "content": "again"}], first_tool_choice="pick",
                                sampling=Sampling(temperature=0.0, max_tokens=6),
                                limits=Limits(max_steps=3, max_completion_tokens=6)))[-1]
    assert budget.reason == "token_budget"  # the turn's own budget is what ran out


def test_recovery_rewinds_the_worker_and_closes_open_calls(loop):
    loop.create_session("acme", "a2")
    list(loop.run_turn("acme", "a2", [{"role": "user", "content": "hi"}], sampling=SAMPLING,
                       limits=Limits(max_steps=1)))
    session = loop.store.get("acme", "a2")
    recorded = session.worker_commit
    # The runtime died after the worker committed a generation the transcript never recorded...
    list(loop.client.generate(session_id=session.worker_session_id, messages=[{"role": "user", "content": "lost"}],
                              sampling=SAMPLING))
    assert loop.client.get_session(session.worker_session_id).commit != recorded
    # ... and, in another life, while a non-idempotent call ran.
    loop.store.append_step("acme", "a2", [Entry(TOOL_CALL, tool_call_id="c-open", tool_name="pick",
                                                arguments={"color": "red"})],
                           worker_session_id=session.worker_session_id, worker_commit=recorded)
    events = list(loop.run_turn("acme", "a2", [{"role": "user", "content": "again"}], sampling=SAMPLING,
                                limits=Limits(max_steps=1)))
    interrupted = [e for e in events if isinstance(e, ToolFinished) and e.status == INTERRUPTED]
    assert [e.call_id for e in interrupted] == ["c-open"] and loop.ran == []  # not re-run
    assert loop.store.open_calls("acme", "a2") == []
    # The worker session went back to the recorded commit before the new step (no "lost" turn in it).
    worker = loop.client.get_session(session.worker_session_id)
    assert worker.commit == loop.store.get("acme", "a2").worker_commit


def test_an_open_call_of_an_idempotent_tool_runs_again_with_its_key(loop):
    keys = []

    @loop.tools.tool(idempotent=True)
    def charge(amount: int, idempotency_key: str) -> str:
        """Charge once per key."""
        keys.append(idempotency_key)
        return "charged"

    loop.create_session("acme", "a3")
    list(loop.run_turn("acme", "a3", [{"role": "user", "content": "hi"}], sampling=SAMPLING,
                       limits=Limits(max_steps=1)))
    session = loop.store.get("acme", "a3")
    recorded = session.worker_commit
    loop.store.append_step("acme", "a3", [Entry(TOOL_CALL, tool_call_id="c-pay", tool_name="charge",
                                                arguments={"amount": 5}, idempotency_key="a3/2/c-pay")],
                           worker_session_id=session.worker_session_id, worker_commit=recorded)
    events = list(loop.run_turn("acme", "a3", [{"role": "user", "content": "done?"}], sampling=SAMPLING,
                                limits=Limits(max_steps=1)))
    rerun = [e for e in events if isinstance(e, ToolFinished)]
    assert [(e.call_id, e.status, e.content) for e in rerun] == [("c-pay", "finished", "charged")]
    assert keys == ["a3/2/c-pay"]  # the key it was started with, so the tool can refuse a double charge


def test_the_chosen_mode_and_its_reason_are_span_attributes(loop, spans):
    loop.create_session("acme", "a4")
    done = list(loop.run_turn("acme", "a4", [{"role": "user", "content": "hi"}], difficulty="easy", sampling=SAMPLING,
                              limits=Limits(max_steps=1)))[-1]
    [turn] = [s for s in spans.get_finished_spans() if s.name == "agent.turn"]
    assert turn.attributes["agent.mode"] == "non-think" and turn.attributes["agent.mode_reason"] == "declared easy"
    assert turn.attributes["agent.stop_reason"] == done.reason and turn.attributes["agent.session_id"] == "a4"
