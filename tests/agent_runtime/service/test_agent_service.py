"""The agent service for real: `python -m agent_runtime serve` as a process, a real model worker process (`tiny`) and
PostgreSQL, driven through the typed AgentClient. Tool calls are forced through the worker's constrained decoding
(first_tool_choice), never faked. Covered: sessions, a tool-calling turn with its mode and reason recorded, approval
pausing a turn, detaching and reattaching by cursor, cancel, fork, a runtime killed while a turn waits (the decision
continues it in a new runtime, and the next turn prefills only its new tokens), auth and status codes."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from realparts import Process, child_env

from foundation.clients.agent import (
    AgentClient,
    AsyncAgentClient,
    ModeChosen,
    TextDelta,
    ToolFinished,
    ToolStarted,
    TurnDone,
)
from foundation.clients.agent.events import kind_of
from foundation.clients.worker import Sampling, WorkerClient
from foundation.clients.worker.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from foundation.tenancy import acting_for

SAMPLING = Sampling(temperature=0.0, max_tokens=48)


class AgentProcess:
    def __init__(self, root, worker: str, database_url: str, name: str) -> None:
        env = child_env()
        env["PYTHONPATH"] += f":{Path(__file__).parent}"
        env.update({"DSV4_AGENT_HEARTBEAT_SECONDS": "0.3", "DSV4_AGENT_STALE_AFTER_SECONDS": "2"})
        self.process = Process([sys.executable, "-m", "agent_runtime", "serve", "--port", "0", "--worker", worker,
                                "--database", database_url, "--require-approval", "charge",
                                "--tool-plugins", "agent_runtime_plugin_tools:register",
                                "--mode-policy", "agent_runtime_plugin_tools:OperatorPolicy",
                                "--api-keys", str(root / "keys.json")], env, root / f"{name}.log")
        port = self.process.wait_for(r"agent service on 127\.0\.0\.1:(\d+)").group(1)
        self.target = f"127.0.0.1:{port}"
        self.client = AgentClient(self.target, api_key="key-acme", timeout=120)

    def stop(self) -> None:
        self.client.close()
        self.process.stop()


@pytest.fixture(scope="module")
def agent(model_worker, database_url, tmp_path_factory):
    root = tmp_path_factory.mktemp("agent")
    (root / "keys.json").write_text(json.dumps({"key-acme": "acme", "key-other": "other"}))
    process = AgentProcess(root, model_worker[0], database_url, "agent-1")
    process.root, process.worker, process.database_url = root, model_worker[0], database_url
    yield process
    process.stop()


def kinds(events) -> list[str]:
    """The kinds of events, text deltas left out (how much text streams before a call depends on the weights)."""
    return [kind_of(e) for e in events if not isinstance(e, TextDelta)]


def until(stream, kind: str) -> list:
    seen = []
    for event in stream:
        seen.append(event)
        if kind_of(event) == kind:
            return seen
    raise AssertionError(f"no {kind} in {kinds(seen)}")


def test_a_turn_calls_a_tool_and_records_its_mode(agent):
    client = agent.client
    session = client.create_session("s-tool", system_prompt="use tools", tools=["pick"])
    assert [t.name for t in session.tools] == ["pick"] and session.worker_session_id
    stream = client.run_turn("s-tool", "what is 2+2?", mode="non-think", first_tool_choice="pick", max_steps=2,
                             sampling=SAMPLING)
    events = list(stream)
    assert kinds(events)[:4] == ["mode_chosen", "step_started", "tool_started", "tool_finished"]
    assert kinds(events)[-1] == "turn_done" and stream.last_seq == len(events) - 1
    assert events[0] == ModeChosen("non-think", "asked for", via_job=False)
    turn = client.get_turn(stream.turn_id)
    assert (turn.status, turn.mode, turn.mode_reason) == ("done", "non-think", "asked for")
    assert turn.usage == events[-1].usage and turn.usage.completion_tokens > 0
    entries = client.transcript("s-tool").entries
    assert [e.kind for e in entries][:4] == ["user", "assistant", "tool_call", "tool_result"]
    assert entries[2].call_status == "finished" and entries[2].tool_name == "pick"
    assert client.get_session("s-tool").steps == turn_done_steps(events)
    # A retried RunTurn (same turn ID) attaches to the turn instead of running it again.
    again = list(client.run_turn("s-tool", "what is 2+2?", turn_id=stream.turn_id))
    assert [e for e in again if not isinstance(e, TextDelta)] == [e for e in events if not isinstance(e, TextDelta)]
    assert [t.turn_id for t in client.list_turns("s-tool")] == [stream.turn_id]


def turn_done_steps(events) -> int:
    return events[-1].steps


def test_approval_pauses_the_turn_and_a_caller_reattaches_by_cursor(agent):
    client = agent.client
    client.create_session("s-approve", tools=["charge", "pick"])
    stream = client.run_turn("s-approve", "charge me", mode="non-think", first_tool_choice="charge",
                             max_steps=2, sampling=SAMPLING)
    seen = until(stream, "approval_requested")
    stream.close()  # the caller goes away; the turn waits on
    turn_id, call_id, cursor = stream.turn_id, seen[-1].call_id, stream.last_seq
    assert client.get_turn(turn_id).status == "awaiting_approval"
    with pytest.raises(FailedPrecondition):  # one turn at a time
        list(client.run_turn("s-approve", "hello?"))
    client.decide("s-approve", call_id, approve=True)
    with pytest.raises(FailedPrecondition):  # decided already
        client.decide("s-approve", call_id, approve=False)
    rest = list(client.attach(turn_id, after_seq=cursor))
    assert kinds(rest)[:2] == ["tool_started", "tool_finished"] and rest[1].content.startswith("charged ")
    assert kinds(rest)[-1] == "turn_done"
    # From the start again: every durable event, in order (text deltas are not kept).
    replay = client.attach(turn_id)
    replay = [(event, replay.last_seq) for event in replay]
    assert [seq for _, seq in replay] == sorted(seq for _, seq in replay)
    replay = [event for event, _ in replay]
    assert "approval_requested" in kinds(replay) and kinds(replay)[-1] == "turn_done"


def test_a_rejected_call_and_a_cancelled_turn(agent):
    client = agent.client
    client.create_session("s-reject", tools=["charge"])
    stream = client.run_turn("s-reject", "charge this", mode="non-think", first_tool_choice="charge",
                             max_steps=2, sampling=SAMPLING)
    seen = until(stream, "approval_requested")
    client.decide("s-reject", seen[-1].call_id, approve=False)
    rest = list(stream)
    finished = [e for e in rest if isinstance(e, ToolFinished)]
    assert finished[0].status == "rejected" and finished[0].is_error
    stream = client.run_turn("s-reject", "charge that", mode="non-think", first_tool_choice="charge",
                             max_steps=2, sampling=SAMPLING)
    seen = until(stream, "approval_requested")
    client.cancel(stream.turn_id)
    rest = list(stream)
    assert isinstance(rest[-1], TurnDone) and rest[-1].reason == "cancelled"
    assert [e.status for e in rest if isinstance(e, ToolFinished)] == ["interrupted"]
    assert client.get_turn(stream.turn_id).status == "cancelled"


def test_fork_at_a_committed_step(agent):
    client = agent.client
    client.create_session("s-base", tools=["pick"])
    for text in ("first", "second"):
        list(client.run_turn("s-base", text, mode="non-think", max_steps=1, sampling=SAMPLING))
    fork = client.fork("s-base", step=1, new_session_id="s-fork")
    assert (fork.steps, fork.parent_session_id) == (1, "s-base")
    assert [e.content for e in client.transcript("s-fork").entries if e.kind == "user"] == ["first"]
    worker = WorkerClient(agent.worker)
    with acting_for("acme"):  # the agent keeps the session's worker state in its tenant
        base_step_1 = worker.get_session(fork.worker_session_id)
    events = list(client.run_turn("s-fork", "third", mode="non-think", max_steps=1, sampling=SAMPLING))
    usage = events[-1].usage
    assert usage.reused_tokens == base_step_1.tokens  # the fork resumes the KV of step 1: no re-prefill
    assert [e.content for e in client.transcript("s-fork").entries if e.kind == "user"] == ["first", "third"]
    assert [e.content for e in client.transcript("s-base").entries if e.kind == "user"] == ["first", "second"]
    with pytest.raises(AlreadyExists):
        client.fork("s-base", step=1, new_session_id="s-fork")
    client.delete_session("s-base")  # the fork keeps reading its history
    assert [e.content for e in client.transcript("s-fork").entries if e.kind == "user"] == ["first", "third"]
    worker.close()


def test_a_runtime_killed_mid_turn_is_continued_by_another_and_nothing_is_prefilled_again(agent):
    client = agent.client
    client.create_session("s-crash", tools=["charge", "pick"])
    list(client.run_turn("s-crash", "hello", mode="non-think", max_steps=1, sampling=SAMPLING))
    stream = client.run_turn("s-crash", "charge me", mode="non-think", first_tool_choice="charge",
                             max_steps=2, sampling=SAMPLING)
    seen = until(stream, "approval_requested")
    stream.close()
    agent.process.kill()  # kill -9 while the turn waits for a human
    agent.client.close()
    revived = AgentProcess(agent.root, agent.worker, agent.database_url, "agent-2")
    agent.process, agent.client, agent.target = revived.process, revived.client, revived.target
    client = revived.client
    turn = client.decide("s-crash", seen[-1].call_id, approve=True)  # continued here
    assert turn.turn_id == stream.turn_id
    rest = list(client.attach(turn.turn_id, after_seq=stream.last_seq))
    assert [e.content for e in rest if isinstance(e, ToolFinished)][0].startswith("charged ")
    assert kinds(rest)[-1] == "turn_done" and client.get_turn(turn.turn_id).status == "done"
    worker = WorkerClient(agent.worker)
    with acting_for("acme"):
        before = worker.get_session(client.get_session("s-crash").worker_session_id).tokens
    events = list(client.run_turn("s-crash", "what did you charge?", mode="non-think", max_steps=1,
                                  sampling=SAMPLING))
    usage = events[-1].usage
    # The whole history comes from the session store; only the new message (and the last reply's closing tokens,
    # which the worker feeds with the next input) is computed.
    assert usage.reused_tokens == before and usage.prefilled_tokens <= usage.prompt_tokens + 2
    worker.close()


def test_auth_tenants_and_bad_input(agent):
    stranger = AgentClient(agent.target, api_key="key-other")
    with pytest.raises(NotFound):
        stranger.get_session("s-tool")
    assert stranger.list_sessions().sessions == []
    anonymous = AgentClient(agent.target)
    with pytest.raises(Unauthenticated):
        anonymous.list_sessions()
    client = agent.client
    with pytest.raises(InvalidArgument):
        client.create_session("s-bad", tools=["rm_rf"])
    with pytest.raises(InvalidArgument):
        client.create_session("bad id with spaces")
    with pytest.raises(NotFound):
        list(client.run_turn("nope", "hi"))
    with pytest.raises(InvalidArgument):
        list(client.run_turn("s-tool", "hi", difficulty="impossible"))
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(agent.target))
    response = health.Check(health_pb2.HealthCheckRequest(service="dsv4.agent.v1.AgentService"))
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    for c in (stranger, anonymous):
        c.close()


def test_a_restarted_model_worker_resumes_the_agent_session_from_the_store(agent, tmp_path):
    """The worker is killed (-9) between turns and comes back on its address: the next turn resumes the session's
    state from the store, prefilling only the new message."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, "-m", "model_worker", "serve", "--config", "tiny", "--port", str(port),
            "--session-store", str(tmp_path / "sessions")]
    worker = Process(args, child_env(), tmp_path / "worker-1.log")
    worker.wait_for(r"serving \S+ on")
    runtime = AgentProcess(agent.root, f"127.0.0.1:{port}", agent.database_url, "agent-own-worker")
    try:
        client = runtime.client
        client.create_session("s-worker", tools=["pick"])
        list(client.run_turn("s-worker", "hello", mode="non-think", max_steps=1, sampling=SAMPLING))
        with WorkerClient(f"127.0.0.1:{port}") as direct, acting_for("acme"):
            before = direct.get_session(client.get_session("s-worker").worker_session_id).tokens
        worker.kill()
        worker = Process(args, child_env(), tmp_path / "worker-2.log")
        worker.wait_for(r"serving \S+ on")
        events = list(client.run_turn("s-worker", "again", mode="non-think", max_steps=1, sampling=SAMPLING))
        usage = events[-1].usage
        assert usage.reused_tokens == before and usage.prefilled_tokens <= usage.prompt_tokens + 2
    finally:
        runtime.stop()
        worker.stop()


def test_the_asyncio_client_streams_the_same_typed_turn(agent):
    async def run():
        async with AsyncAgentClient(agent.target, api_key="key-acme") as client:
            session = await client.create_session("s-async", tools=["pick"])
            stream = client.run_turn("s-async", "pick one", mode="non-think", first_tool_choice="pick", max_steps=2,
                                     sampling=SAMPLING)
            seen = []
            async for event in stream:
                match event:
                    case ToolStarted(name=name, arguments=arguments):
                        seen.append(("call", name, sorted(arguments)))
                    case ToolFinished(name=name, status=status):
                        seen.append(("result", name, status))
                    case TurnDone(reason=reason, steps=steps):
                        seen.append(("done", reason, steps))
            turn, page = await client.get_turn(stream.turn_id), await client.list_sessions(limit=100)
            replay = [e async for e in client.attach(stream.turn_id) if not isinstance(e, TextDelta)]
            return session, seen, turn, page, replay, stream.turn_id

    session, seen, turn, page, replay, turn_id = asyncio.run(run())
    assert [t.name for t in session.tools] == ["pick"] and session.worker_session_id
    assert seen[:2] == [("call", "pick", ["color"]), ("result", "pick", "finished")] and seen[-1][0] == "done"
    assert (turn.turn_id, turn.status, turn.stop_reason) == (turn_id, "done", seen[-1][1])
    assert "s-async" in [s.session_id for s in page.sessions]
    assert isinstance(replay[-1], TurnDone) and replay[-1].usage == turn.usage


def test_the_operators_mode_policy_from_the_settings_picks_the_mode_of_a_turn_that_names_none(agent):
    client = agent.client
    client.create_session("s-policy", tools=["pick", "charge"])
    events = list(client.run_turn("s-policy", "hello", max_steps=1, sampling=Sampling(temperature=0.0, max_tokens=4)))
    assert events[0] == ModeChosen("think-high", "operator policy (2 tools)", via_job=False)
    turn = client.list_turns("s-policy")[0]
    assert (turn.mode, turn.mode_reason) == ("think-high", "operator policy (2 tools)")
