"""Every method of the model worker, the jobs service and the agent service, fuzzed through the public gRPC API as two
tenants would call it: the services and their message types are read through each server's reflection service,
requests are built from the descriptors (tests/security/fuzzing.py): a deterministic sweep setting each field in turn
to its type's critical values, then hypothesis-generated ones. Whatever a request says, the answer is a reply or a
deliberate status, never INTERNAL or UNKNOWN; every server still answers SERVING afterwards.

Real servers: the worker (`tiny`) on a port of this process, the jobs service (`python -m services.jobs serve`, on
PostgreSQL, its Celery queue on Redis) and the agent service (`python -m agent_runtime serve`) as processes, all with
the same key table (two tenants and a service key)."""

from __future__ import annotations

import json
import sys

import fuzzing
import grpc
import grpc_reflect
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from realparts import Process, broker_url, child_env, database_url  # noqa: F401 - fixtures

from foundation.tenancy import TENANT_HEADER
from protos.dsv4.agent.v1 import agent_pb2
from protos.dsv4.jobs.v1 import jobs_pb2
from protos.dsv4.worker.v1 import worker_pb2

KEYS = {"key-acme": "acme", "key-other": "other"}
SERVICE_KEY = "key-platform"  # the services' own key, for the hops between them
SERVICES = {"worker": worker_pb2.DESCRIPTOR.services_by_name["ModelWorker"],
            "jobs": jobs_pb2.DESCRIPTOR.services_by_name["Jobs"],
            "agent": agent_pb2.DESCRIPTOR.services_by_name["AgentService"]}
EXAMPLES = 25  # per method (36 of them): each example is a call, or a few
UNARY_DEADLINE_S, STREAM_DEADLINE_S = 30.0, 5.0  # a stream that follows a queued batch ends at its deadline
TOOLS = ["calculator", "read_file", "list_files"]
WORDS = {"role": ["user", "assistant", "system", "tool", "developer", "User", "function"],
         "name": ["f", "g", *TOOLS], "function": ["f", *TOOLS], "tools": TOOLS,
         "difficulty": ["easy", "normal", "hard"], "first_tool_choice": ["auto", "none", "required", *TOOLS]}
# Generation costs compute: a fuzzed one names its length (a few tokens, or an edge that must be refused), so each
# call ends within its deadline and a detached agent turn does not run on after its test.
ALWAYS = frozenset({"sampling", "max_tokens"})


USER = [worker_pb2.ChatMessage(role="user", content="hi")]
SHORT = worker_pb2.SamplingParams(max_tokens=2, temperature=0)


def batch_line(custom_id: str = "q") -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "reasoning_effort": "none"}}


def jsonl_text() -> st.SearchStrategy[str]:
    """Batch input: valid lines, lines with wrong shapes, deep nesting and garbage, mixed."""
    def broken(body_change: dict) -> str:
        line = batch_line()
        line["body"].update(body_change)
        return json.dumps(line)

    samples = [json.dumps(batch_line()), broken({"messages": [{"content": "no role"}]}),
               broken({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
               broken({"messages": [{"role": 7, "content": {"a": 1}}]}), broken({"messages": "hi"}),
               broken({"tool_choice": {"function": "f"}}), broken({"response_format": {"type": "json_schema",
                                                                                     "json_schema": "x"}}),
               broken({"max_tokens": 2**40}), broken({"stop": ["x"] * 100}), broken({"session_id": "../../x"}),
               broken({"messages": [{"role": "user", "content": "nul \x00 inside"}]}), broken({"custom": "\x00"}),
               *fuzzing.JSON_BROKEN, "", "\n\n", "not json"]
    return st.lists(st.sampled_from(samples), min_size=1, max_size=3).map("\n".join)


# Valid requests, by method, that the fuzzer varies one field of (the objects they name exist; acme's).
SEEDS = {
    "worker": {"Generate": [worker_pb2.GenerateRequest(session_id="fz-acme", sampling=SHORT,
                                                       messages=worker_pb2.Messages(messages=USER)),
                            worker_pb2.GenerateRequest(token_ids=worker_pb2.TokenIds(ids=[5, 6, 7]), sampling=SHORT)],
               "CreateSession": [worker_pb2.CreateSessionRequest(system_prompt="s"),
                                 worker_pb2.CreateSessionRequest(from_session="fz-acme")],
               "AppendSession": [worker_pb2.AppendSessionRequest(session_id="fz-acme",
                                                                 messages=worker_pb2.Messages(messages=USER))],
               "ForkSession": [worker_pb2.ForkSessionRequest(session_id="fz-acme")],
               "HoldSession": [worker_pb2.HoldSessionRequest(session_id="fz-acme", holder="job-1", seconds=5)],
               "Tokenize": [worker_pb2.TokenizeRequest(text="hi")]},
    "jobs": {"CreateBatch": [jobs_pb2.CreateBatchRequest(requests=jobs_pb2.JobRequests(requests=[jobs_pb2.JobRequest(
        custom_id="q", messages=USER, mode=worker_pb2.NON_THINK, sampling=SHORT)])),
        jobs_pb2.CreateBatchRequest(jsonl=json.dumps(batch_line()))]},
    "agent": {"RunTurn": [agent_pb2.RunTurnRequest(session_id="ag-acme", messages=USER, mode=worker_pb2.NON_THINK,
                                                   sampling=SHORT)],
              "CreateSession": [agent_pb2.CreateSessionRequest(system_prompt="s")],
              "ForkSession": [agent_pb2.ForkSessionRequest(session_id="ag-acme")]},
}


class Server:
    """One server under fuzz: its channel, the services its reflection lists, and what its requests may name."""

    def __init__(self, address: str, hints: fuzzing.Hints, process: Process | None = None) -> None:
        self.address, self.hints, self.process = address, hints, process
        self.channel = grpc.insecure_channel(address)
        self.services = grpc_reflect.reflect(self.channel)

    def stub(self, service: str, method: str, key: str):
        descriptor = self.services[service].methods_by_name[method]
        return lambda request, timeout=UNARY_DEADLINE_S: grpc_reflect.call(
            self.channel, descriptor, request, [("authorization", f"Bearer {key}")], timeout)

    def log_tail(self) -> str:
        return self.process.log.read_text()[-3000:] if self.process else "(in this process: see captured output)"


def _ok(outcome: grpc_reflect.Outcome):
    assert outcome.code == grpc.StatusCode.OK, (outcome.code, outcome.details)
    return outcome.responses[-1]


def _worker_in_process(root):
    from foundation.auth import load_api_keys
    from model_worker.engine.loading import load_model
    from model_worker.server.serve import serve_in_process
    from model_worker.sessions import open_blobs

    return serve_in_process(load_model(None, "tiny", numerics="official"), open_blobs(str(root / "sessions")),
                            token_budget=256, api_keys=load_api_keys(str(root / "keys.json")))


def _worker(worker) -> Server:
    server = Server(worker.address, fuzzing.Hints())
    sid = worker_pb2.DESCRIPTOR.services_by_name["ModelWorker"].full_name
    ids = []
    for key, tenant in KEYS.items():
        create = server.stub(sid, "CreateSession", key)
        session = _ok(create(worker_pb2.CreateSessionRequest(session_id=f"fz-{tenant}", system_prompt="be brief")))
        ids.append(session.session_id)
        generate = server.stub(sid, "Generate", key)  # a first generation also builds the CPU kernels
        _ok(generate(worker_pb2.GenerateRequest(session_id=session.session_id, messages=worker_pb2.Messages(
            messages=USER), sampling=SHORT), timeout=120))
    export = b"".join(c.data for c in server.stub(sid, "ExportSession", "key-acme")(
        worker_pb2.ExportSessionRequest(session_id="fz-acme")).responses)
    seeds = {**SEEDS["worker"], "ImportSession": [worker_pb2.ImportChunk(data=export)]}
    server.hints = fuzzing.Hints(ids=ids, words=WORDS, blobs=[export], ints=[129_279, 129_280, 1 << 20],
                                 always=ALWAYS, seeds=seeds)
    return server


def _jobs_process(root, database, broker, worker: str) -> Process:
    env = child_env(database_url=database, broker_url=broker, worker_target=worker, worker_api_key=SERVICE_KEY,
                    result_store=str(root / "results"))
    return Process([sys.executable, "-m", "services.jobs", "serve", "--port", "0", "--api-keys",
                    str(root / "keys.json")], env, root / "jobs.log")


def _jobs(process: Process) -> Server:
    port = process.wait_for(r"jobs service on 127\.0\.0\.1:(\d+)").group(1)
    server = Server(f"127.0.0.1:{port}", fuzzing.Hints(), process)
    name = jobs_pb2.DESCRIPTOR.services_by_name["Jobs"].full_name
    ids = [_ok(server.stub(name, "CreateBatch", key)(jobs_pb2.CreateBatchRequest(
        jsonl=json.dumps(batch_line()), metadata={"who": tenant}))).id for key, tenant in KEYS.items()]
    server.hints = fuzzing.Hints(ids=ids + ["q"], words=WORDS, ints=[86_400], always=ALWAYS, seeds=SEEDS["jobs"],
                                 special={"jsonl": jsonl_text()})
    return server


def _agent_process(root, database, worker: str) -> Process:
    env = child_env()
    env.update({"DSV4_AGENT_WORKER_API_KEY": SERVICE_KEY, "DSV4_AGENT_WORKSPACE": str(root / "workspace"),
                "DSV4_AGENT_HEARTBEAT_SECONDS": "0.5"})
    (root / "workspace").mkdir()
    (root / "workspace" / "notes.txt").write_text("notes")
    return Process([sys.executable, "-m", "agent_runtime", "serve", "--port", "0", "--worker", worker,
                    "--database", database, "--api-keys", str(root / "keys.json")], env, root / "agent.log")


def _agent(process: Process) -> Server:
    port = process.wait_for(r"agent service on 127\.0\.0\.1:(\d+)").group(1)
    server = Server(f"127.0.0.1:{port}", fuzzing.Hints(), process)
    name = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name
    ids = []
    for key, tenant in KEYS.items():
        _ok(server.stub(name, "CreateSession", key)(agent_pb2.CreateSessionRequest(session_id=f"ag-{tenant}")))
        events = server.stub(name, "RunTurn", key)(agent_pb2.RunTurnRequest(
            session_id=f"ag-{tenant}", messages=USER, mode=worker_pb2.NON_THINK, sampling=SHORT), timeout=120)
        assert events.code == grpc.StatusCode.OK and events.responses, (events.code, events.details)
        ids += [f"ag-{tenant}", events.responses[0].turn_id]
    server.hints = fuzzing.Hints(ids=ids, words=WORDS, always=ALWAYS, seeds=SEEDS["agent"])
    return server


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-grpc")
    (root / "keys.json").write_text(json.dumps({**KEYS, SERVICE_KEY: {"tenant": "platform", "service": True}}))
    return root


@pytest.fixture(scope="module")
def worker_server(root):
    worker = _worker_in_process(root)
    try:
        server = _worker(worker)
        yield server
        server.channel.close()
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def jobs_server(root, database_url, broker_url, worker_server):  # noqa: F811 - fixtures
    process = _jobs_process(root, database_url, broker_url, worker_server.address)
    try:
        server = _jobs(process)
        yield server
        server.channel.close()
    finally:
        process.stop()


@pytest.fixture(scope="module")
def agent_server(root, database_url, worker_server):  # noqa: F811 - fixtures
    process = _agent_process(root, database_url, worker_server.address)
    try:
        server = _agent(process)
        yield server
        server.channel.close()
    finally:
        process.stop()


def _cancel_turns(server: Server, outcome: grpc_reflect.Outcome, metadata) -> None:
    """A turn runs on after its caller leaves: one the fuzzer started is cancelled, so it does not hold compute."""
    turns = {getattr(r, "turn_id", "") for r in outcome.responses} - {""}
    service = SERVICES["agent"].full_name
    cancel = server.services[service].methods_by_name["CancelTurn"]
    for turn_id in turns:
        grpc_reflect.call(server.channel, cancel, agent_pb2.CancelTurnRequest(turn_id=turn_id), metadata,
                          UNARY_DEADLINE_S)


# Deleting and cancelling last, so the known objects the other methods are steered to still exist for them.
CASES = [(server, method.name) for server, service in SERVICES.items()
         for method in sorted(service.methods, key=lambda m: m.name.startswith(("Delete", "Cancel")))]


@pytest.mark.parametrize("server_name", SERVICES)
def test_reflection_lists_every_method_of_the_contract(request, server_name) -> None:
    server, service = request.getfixturevalue(f"{server_name}_server"), SERVICES[server_name]
    assert sorted(m.name for m in server.services[service.full_name].methods) == sorted(m.name for m in service.methods)


def _failure(server: Server, method, request, metadata) -> str | None:
    """What is wrong with the method's answer to `request` (None: a reply or a deliberate status)."""
    timeout = STREAM_DEADLINE_S if method.server_streaming else UNARY_DEADLINE_S
    outcome = grpc_reflect.call(server.channel, method, request, metadata, timeout)
    if method.containing_service.full_name == SERVICES["agent"].full_name:
        _cancel_turns(server, outcome, metadata)
    if outcome.code not in grpc_reflect.FAILURES:
        return None
    return (f"{method.full_name} answered {outcome.code.name}: {outcome.details.splitlines()[0][:300]}\n"
            f"  request: {grpc_reflect.describe(request)}\n  metadata: {metadata}")


def _method(request, server_name: str, method_name: str) -> tuple[Server, object]:
    server = request.getfixturevalue(f"{server_name}_server")
    return server, server.services[SERVICES[server_name].full_name].methods_by_name[method_name]


@pytest.mark.parametrize(("server_name", "method_name"), CASES, ids=[f"{s}.{m}" for s, m in CASES])
def test_no_field_at_a_critical_value_makes_a_method_fail_internally(request, server_name, method_name) -> None:
    server, method = _method(request, server_name, method_name)
    metadata = [("authorization", "Bearer key-acme")]
    failures = [f for f in (_failure(server, method, r, metadata) for r in fuzzing.sweep(method, server.hints)) if f]
    assert not failures, f"{len(failures)} requests failed internally:\n" + "\n".join(failures[:40]) + \
        f"\nserver log:\n{server.log_tail()}"
    assert grpc_reflect.serving(server.channel) == grpc_reflect.SERVING


@pytest.mark.parametrize(("server_name", "method_name"), CASES, ids=[f"{s}.{m}" for s, m in CASES])
def test_no_generated_request_makes_a_method_fail_internally(request, server_name, method_name) -> None:
    server, method = _method(request, server_name, method_name)

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(request=fuzzing.requests(method, server.hints), metadata=grpc_reflect.metadata_for(KEYS, TENANT_HEADER))
    def fuzz(request, metadata) -> None:
        failure = _failure(server, method, request, metadata)
        assert failure is None, f"{failure}\nserver log:\n{server.log_tail()}"

    fuzz()
    assert grpc_reflect.serving(server.channel) == grpc_reflect.SERVING


@pytest.mark.parametrize("server_name", SERVICES)
def test_the_server_still_serves_after_the_fuzzing(request, server_name) -> None:
    assert grpc_reflect.serving(request.getfixturevalue(f"{server_name}_server").channel) == grpc_reflect.SERVING
