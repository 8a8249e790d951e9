"""The jobs service's input edge, attacked over its gRPC API with two tenants' keys: a batch is bounded (requests,
bytes; a line's own bytes), every hostile line is an invalid line with its number and never INTERNAL, session and
batch IDs are validated. Real parts: the jobs gRPC server with small limits and PostgreSQL; valid requests are
published to an in-process broker (nothing here needs one to run, and the Redis broker other tests' Celery workers
serve is left alone)."""

from __future__ import annotations

import json

import pytest
from realparts import database_url  # noqa: F401 - fixtures

from foundation.clients.jobs import JobRequest
from foundation.clients.worker import InvalidArgument, Message, NotFound, ResourceExhausted

KEYS = {"key-acme": "acme", "key-other": "other"}
MAX_REQUESTS, MAX_BYTES, MAX_REQUEST_BYTES = 4, 48 << 10, 8 << 10
MAX_MESSAGES, MAX_TOOLS, MAX_SCHEMA_BYTES, MAX_DEPTH = 8, 4, 1024, 16
BROKER = "memory://"


@pytest.fixture(scope="module")
def jobs(database_url):  # noqa: F811 - fixture
    """A client per key of the jobs service, served in this process with the limits above."""
    from foundation.clients.jobs import JobsClient
    from foundation.sql import make_engine, sessions
    from services.jobs import celery_app
    from services.jobs.job_store import JobStore
    from services.jobs.server import build_server
    from services.jobs.settings import JobsSettings
    from services.jobs.use_cases import Jobs

    settings = JobsSettings(database_url=database_url, broker_url=BROKER, max_batch_requests=MAX_REQUESTS,
                            max_batch_bytes=MAX_BYTES, max_request_bytes=MAX_REQUEST_BYTES,
                            max_messages=MAX_MESSAGES, max_tools=MAX_TOOLS, max_schema_bytes=MAX_SCHEMA_BYTES,
                            max_json_depth=MAX_DEPTH)
    celery_app.configure(settings)
    engine = make_engine(database_url)
    jobs = Jobs(JobStore(sessions(engine)), celery_app.CeleryPublisher(), limits=settings.batch_limits())
    server, port = build_server(jobs, "127.0.0.1", 0, KEYS)
    server.start()
    clients = {tenant: JobsClient(f"127.0.0.1:{port}", api_key=key) for key, tenant in KEYS.items()}
    yield clients
    for client in clients.values():
        client.close()
    server.stop(grace=1).wait()
    engine.dispose()


def line(custom_id: str, **body) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **body}}


def jsonl(*lines: dict | str) -> str:
    return "".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in lines)


def batches_of(client) -> list[str]:
    return [batch.id for batch in client.list(100).batches]


def deep(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels):
        value = {"a": value}
    return value


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
HOSTILE_LINES = {  # each the second line of its batch: reported invalid with its line number, the first still runs
    "deep nesting the parser gives up on": ('{"custom_id": "x", "body": ' + "[" * 3000 + "]" * 3000 + "}", "deep"),
    "nesting past the bound": (line("x", metadata=deep(MAX_DEPTH + 1)), "deep"),
    "over the line's bytes": (line("x", messages=[{"role": "user", "content": "a" * MAX_REQUEST_BYTES}]), "bytes"),
    "tool_choice of the wrong shape": (line("x", tools=[TOOL], tool_choice={"function": "f"}), "tool_choice"),
    "tool_choice naming no tool": (line("x", tools=[TOOL], tool_choice={"type": "function",
                                                                        "function": {"name": "g"}}), "tool_choice"),
    "json_schema as a string": (line("x", response_format={"type": "json_schema", "json_schema": "{}"}),
                                "json_schema"),
    "a tool without a name": (line("x", tools=[{"type": "function", "function": {"parameters": {}}}]), "name"),
    "a session_id that walks out of its directory": (line("x", session_id="../other/s"), "session_id"),
    "too many messages": (line("x", messages=[{"role": "user", "content": "hi"}] * (MAX_MESSAGES + 1)), "messages"),
    "too many tools": (line("x", tools=[{"type": "function", "function": {"name": f"f{i}"}}
                                         for i in range(MAX_TOOLS + 1)]), "tools"),
    "a schema over its bytes": (line("x", response_format={"type": "json_schema", "json_schema": {
        "name": "big", "schema": {"type": "object", "description": "d" * MAX_SCHEMA_BYTES}}}), "bytes"),
}


@pytest.mark.parametrize("name", HOSTILE_LINES)
def test_a_hostile_line_is_an_invalid_line_and_the_rest_of_its_batch_runs(jobs, name):
    hostile, reason = HOSTILE_LINES[name]
    batch = jobs["acme"].submit_jsonl(jsonl(line("ok"), hostile))
    assert batch.request_counts.total == 1
    assert [(error.line, reason in error.message) for error in batch.errors] == [(2, True)], batch.errors


def test_a_batch_over_its_count_of_requests_is_refused_whole(jobs):
    before = batches_of(jobs["acme"])
    with pytest.raises(ResourceExhausted, match="requests"):
        jobs["acme"].submit_jsonl(jsonl(*(line(f"q-{i}") for i in range(MAX_REQUESTS + 1))))
    typed = [JobRequest(f"q-{i}", [Message("user", "hi")]) for i in range(MAX_REQUESTS + 1)]
    with pytest.raises(ResourceExhausted, match="requests"):
        jobs["acme"].submit(typed)
    assert batches_of(jobs["acme"]) == before


def test_a_batch_over_its_bytes_is_refused_whole(jobs):
    """Each line within its own bound, blank padding between them: the batch's bytes still count, and so does its
    metadata."""
    before = batches_of(jobs["acme"])
    with pytest.raises(ResourceExhausted, match="bytes"):
        jobs["acme"].submit_jsonl(jsonl(line("q-1"), " " * MAX_BYTES, line("q-2")))
    with pytest.raises(ResourceExhausted, match="bytes"):
        jobs["acme"].submit_jsonl(jsonl(line("q-1")), metadata={f"k{i}": "v" * 1000 for i in range(MAX_BYTES // 1000)})
    assert batches_of(jobs["acme"]) == before


def test_a_typed_request_is_bounded_and_its_session_id_checked(jobs):
    big = JobRequest("big", [Message("user", "a" * MAX_REQUEST_BYTES)])
    walker = JobRequest("walker", [Message("user", "hi")], session_id="../../sessions/x")
    ok = JobRequest("ok", [Message("user", "hi")])
    batch = jobs["acme"].submit([ok, big, walker])
    assert batch.request_counts.total == 1
    assert [(e.line, word in e.message) for e, word in zip(batch.errors, ("bytes", "session_id"))] == [
        (2, True), (3, True)]


@pytest.mark.parametrize("batch_id", ["../other", "a b", "x" * 200, ".."])
def test_malformed_batch_ids_are_invalid_arguments(jobs, batch_id):
    client = jobs["acme"]
    for call in (client.get, client.cancel, client.progress, lambda b: list(client.results(b)),
                 lambda b: client.list(10, b)):
        with pytest.raises(InvalidArgument, match="batch_id|after"):
            call(batch_id)


def test_another_tenants_batch_stays_absent(jobs):
    batch = jobs["acme"].submit_jsonl(jsonl(line("mine")))
    with pytest.raises(NotFound):
        jobs["other"].get(batch.id)
    assert batch.id not in batches_of(jobs["other"])
