"""The agent service attacked as a hostile tenant would, over its public gRPC API with two tenants' keys, on real
parts: `python -m agent_runtime serve` as a process, a real model worker process (`tiny`) and PostgreSQL. Tool calls
are forced through the worker's constrained decoding (closed parameter sets), never faked.

- Session and turn IDs are per tenant: a name another tenant holds is neither revealed nor squatted, and another
  tenant's turn ID is NOT_FOUND (or a turn of one's own), never ALREADY_EXISTS or INTERNAL.
- A tool cannot stall the service: a calculator bomb is an error at once, a tool that holds the interpreter lock for
  minutes is stopped at its timeout, and the turn's heartbeat keeps renewing meanwhile (so no replica adopts it).
- Every size a client controls is bounded (a setting; small ones here) and every bad input gets a clear status.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
import sqlalchemy
from agent_isolation_tools import BOMB
from realparts import Process, child_env, database_url, model_worker  # noqa: F401 - fixtures

from foundation.clients.agent import AgentClient, ToolFinished, ToolStarted
from foundation.clients.agent.events import kind_of
from foundation.clients.worker import Sampling
from foundation.clients.worker.errors import AlreadyExists, NotFound
from protos.dsv4.agent.v1 import agent_pb2 as pb
from protos.dsv4.agent.v1 import agent_pb2_grpc
from protos.dsv4.worker.v1 import worker_pb2

KEYS = {"key-acme": "acme", "key-other": "other"}
SHORT = Sampling(temperature=0.0, max_tokens=8)
TOOL_CALL = Sampling(temperature=0.0, max_tokens=96)  # room for the forced call's DSML block
STALE_AFTER_S = 2.0
BOUNDS = {"MAX_MESSAGES": "4", "MAX_MESSAGE_BYTES": "4096", "MAX_SYSTEM_PROMPT_BYTES": "2048",
          "MAX_SESSION_TOOLS": "8", "MAX_TURN_STEPS": "32"}


@pytest.fixture(scope="module")
def agent(model_worker, database_url, tmp_path_factory):  # noqa: F811 - fixtures
    root = tmp_path_factory.mktemp("agent-isolation")
    (root / "keys.json").write_text(json.dumps(KEYS))
    env = child_env()
    env["PYTHONPATH"] += f":{Path(__file__).parent}"
    env.update({"DSV4_AGENT_HEARTBEAT_SECONDS": "0.3", "DSV4_AGENT_STALE_AFTER_SECONDS": str(STALE_AFTER_S)})
    env.update({f"DSV4_AGENT_{name}": value for name, value in BOUNDS.items()})
    process = Process([sys.executable, "-m", "agent_runtime", "serve", "--port", "0", "--worker", model_worker[0],
                       "--database", database_url, "--tool-plugins", "agent_isolation_tools:register",
                       "--api-keys", str(root / "keys.json")], env, root / "agent.log")
    target = "127.0.0.1:" + process.wait_for(r"agent service on 127\.0\.0\.1:(\d+)").group(1)
    clients = {tenant: AgentClient(target, api_key=key, timeout=60) for key, tenant in KEYS.items()}
    channel = grpc.insecure_channel(target)
    yield target, clients, agent_pb2_grpc.AgentServiceStub(channel), database_url
    channel.close()
    for client in clients.values():
        client.close()
    process.stop()


def status(call, request, tenant: str = "acme") -> grpc.StatusCode:
    """The status a raw call (as any gRPC client can make it) ends with; streams are read to their end."""
    key = next(k for k, t in KEYS.items() if t == tenant)
    try:
        result = call(request, metadata=[("authorization", f"Bearer {key}")], timeout=60)
        if hasattr(result, "__iter__") and not hasattr(result, "ListFields"):
            list(result)
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()


def turn_request(**fields) -> pb.RunTurnRequest:
    """A cheap turn on the session `bounds` (one short step), whatever else a case sets."""
    fields = {"session_id": "bounds", "messages": [worker_pb2.ChatMessage(role="user", content="hi")],
              "mode": worker_pb2.NON_THINK, "limits": pb.TurnLimits(max_steps=1),
              "sampling": worker_pb2.SamplingParams(temperature=0.0, max_tokens=4), **fields}
    return pb.RunTurnRequest(**fields)


def one_turn(client: AgentClient, session_id: str, turn_id: str, sampling: Sampling = SHORT, **options) -> list:
    events = list(client.run_turn(session_id, "hi", mode="non-think", max_steps=1, sampling=sampling,
                                  turn_id=turn_id, **options))
    assert kind_of(events[-1]) == "turn_done", events[-1]
    return events


def test_session_and_turn_ids_are_per_tenant(agent):
    _, clients, stub, _ = agent
    acme, other = clients["acme"], clients["other"]
    acme.create_session("trip", system_prompt="plan trips")
    acme.create_session("acme-only")
    mine = other.create_session("trip", system_prompt="other trips")  # the name is not the other tenant's to hold
    assert mine.system_prompt == "other trips" and acme.get_session("trip").system_prompt == "plan trips"
    assert mine.worker_session_id != acme.get_session("trip").worker_session_id
    with pytest.raises(AlreadyExists):  # only one's own ID is ALREADY_EXISTS
        other.create_session("trip")
    for attempt in (lambda: other.get_session("acme-only"), lambda: other.delete_session("acme-only"),
                    lambda: other.fork("acme-only", new_session_id="stolen"), lambda: other.list_turns("acme-only"),
                    lambda: other.transcript("acme-only")):
        with pytest.raises(NotFound):
            attempt()
    # The same turn ID in both tenants: two turns, each its tenant's own.
    acme_events = one_turn(acme, "trip", "t-shared")
    other_events = one_turn(other, "trip", "t-shared")
    assert acme.get_turn("t-shared").session_id == other.get_turn("t-shared").session_id == "trip"
    assert [t.turn_id for t in other.list_turns("trip")] == ["t-shared"]
    assert acme.get_session("trip").steps == other.get_session("trip").steps == 1
    assert acme_events[-1].content == acme.get_turn("t-shared").content
    assert other_events[-1].content == other.get_turn("t-shared").content
    one_turn(acme, "acme-only", "t-acme")
    for call, request in ((stub.GetTurn, pb.GetTurnRequest(turn_id="t-acme")),
                          (stub.CancelTurn, pb.CancelTurnRequest(turn_id="t-acme")),
                          (stub.Attach, pb.AttachRequest(turn_id="t-acme", after_seq=-1))):
        assert status(call, request, "other") == grpc.StatusCode.NOT_FOUND
    # A retried RunTurn naming another tenant's turn on one's own session starts one's own turn.
    one_turn(other, "trip", "t-acme")
    assert acme.get_turn("t-acme").session_id == "acme-only"
    # Every ID is validated at the boundary.
    for call, request in ((stub.GetSession, pb.GetSessionRequest(session_id="../trip")),
                          (stub.GetTurn, pb.GetTurnRequest(turn_id="t/../x")),
                          (stub.Attach, pb.AttachRequest(turn_id="")),
                          (stub.ListSessions, pb.ListSessionsRequest(after="a\nb")),
                          (stub.ForkSession, pb.ForkSessionRequest(session_id="trip", new_session_id="a b")),
                          (stub.DecideToolCall, pb.DecideToolCallRequest(session_id="trip", tool_call_id="../c")),
                          (stub.RunTurn, pb.RunTurnRequest(session_id="trip", turn_id="x" * 129))):
        assert status(call, request) == grpc.StatusCode.INVALID_ARGUMENT, request


def test_every_client_controlled_size_is_bounded_and_bad_input_gets_a_clear_status(agent):
    _, clients, stub, _ = agent
    acme = clients["acme"]
    acme.create_session("bounds", tools=["stall", "read_blob"])
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    user = worker_pb2.ChatMessage(role="user", content="hi")
    nested = worker_pb2.ChatMessage(role="user", content="hi", tool_calls=[
        worker_pb2.ToolCall(id="c", name="stall", arguments_json="[" * 100_000)])
    cases = [
        (stub.RunTurn, turn_request(messages=[nested])),
        (stub.RunTurn, turn_request(messages=[user] * 5)),
        (stub.RunTurn, turn_request(messages=[worker_pb2.ChatMessage(role="user", content="x" * 8192)])),
        (stub.RunTurn, turn_request(limits=pb.TurnLimits(max_steps=10**6))),
        (stub.RunTurn, turn_request(first_tool_choice="x" * 10_000)),
        (stub.RunTurn, turn_request(messages=[worker_pb2.ChatMessage(role="user", content="a\x00b")])),
        (stub.CreateSession, pb.CreateSessionRequest(session_id="b0", system_prompt="you are\x00")),
        (stub.CreateSession, pb.CreateSessionRequest(session_id="b1", system_prompt="x" * 4096)),
        (stub.CreateSession, pb.CreateSessionRequest(session_id="b2", tools=["stall"] * 9)),
    ]
    for call, request in cases:
        assert status(call, request) == invalid, str(request)[:200]
    assert [s.session_id for s in acme.list_sessions().sessions if s.session_id.startswith("b")] == ["bounds"]
    # A tool call that does not exist, and cursors past either end, are clear answers too.
    decide = pb.DecideToolCallRequest(session_id="bounds", tool_call_id="no-such-call", approve=True)
    assert status(stub.DecideToolCall, decide) == grpc.StatusCode.NOT_FOUND
    one_turn(acme, "bounds", "t-bounds")
    for after in (2**63 - 1, -2**63):
        assert status(stub.Attach, pb.AttachRequest(turn_id="t-bounds", after_seq=after)) == grpc.StatusCode.OK
    # A tool's output with NUL characters (which PostgreSQL refuses) is kept, not a failed turn.
    events = one_turn(acme, "bounds", "t-blob", TOOL_CALL, first_tool_choice="read_blob")
    assert [kind_of(e) for e in events if isinstance(e, ToolFinished)] == ["tool_finished"]
    results = [e.content for e in acme.transcript("bounds").entries if e.kind == "tool_result"]
    assert results == ["PK\ufffd\x03 header"]


def turn_row(database: str, turn_id: str) -> tuple[dt.datetime, str] | None:
    engine = sqlalchemy.create_engine(database)
    try:
        with engine.connect() as connection:
            return connection.execute(sqlalchemy.text(
                "SELECT heartbeat_at, owner FROM turns WHERE tenant = 'acme' AND id = :id"), {"id": turn_id}).first()
    finally:
        engine.dispose()


def test_a_tool_cannot_stall_the_service(agent):
    _, clients, _, database = agent
    acme = clients["acme"]
    acme.create_session("tools", tools=["calc_bomb", "stall"])
    started: dict[str, float] = {}
    finished: dict[str, tuple[float, object]] = {}
    events: list = []

    def run(tool: str, turn_id: str) -> None:
        for event in acme.run_turn("tools", "go", mode="non-think", first_tool_choice=tool, max_steps=1,
                                   sampling=TOOL_CALL, turn_id=turn_id):
            events.append(event)
            kind = kind_of(event)
            if kind == "tool_started":
                started[tool] = time.monotonic()
            elif kind == "tool_finished":
                finished[tool] = (time.monotonic(), event)

    thread = threading.Thread(target=run, args=("stall", "t-stall"), daemon=True)
    thread.start()
    owners, oldest = set(), 0.0
    deadline = time.monotonic() + 30
    while thread.is_alive() and time.monotonic() < deadline:
        row = turn_row(database, "t-stall")
        if row is not None:
            beat, owner = row
            owners.add(owner)
            if "stall" in started:
                oldest = max(oldest, (dt.datetime.now(dt.timezone.utc) - beat).total_seconds())
        time.sleep(0.1)
    assert "stall" in finished, "the stalling tool never finished: the service stalled with it"
    result = finished["stall"][1]
    assert result.is_error and "timed out" in result.content
    assert oldest < STALE_AFTER_S, f"the heartbeat went {oldest:.1f} s without renewal while the tool ran"
    assert len(owners) == 1  # never adopted by another runtime
    run("calc_bomb", "t-bomb")
    result = finished["calc_bomb"][1]
    assert result.is_error and "too large" in json.loads(result.content)["error"]
    assert finished["calc_bomb"][0] - started["calc_bomb"] < 5
    assert BOMB in json.dumps([e.arguments for e in events if isinstance(e, ToolStarted)])
