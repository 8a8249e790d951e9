"""The gateway's input edge, attacked over HTTP with several tenants' keys: request bodies are bounded as they stream
(chunked, multipart), a rate-limited tenant gets 429 with Retry-After (the gateway's own bucket and a worker's), and
every malformed or oversized input, bad ID or over-large batch is a clear 4xx in OpenAI's error shape, never a 500.

Real parts: two `python -m services.gateway` processes (one with a token bucket per tenant, one without) in front of
one model worker process (`tiny`, its own token bucket per tenant) and the jobs gRPC server (in this process, with
small batch limits, on PostgreSQL; no batch here is accepted, so its broker is an in-process one)."""

from __future__ import annotations

import http.client
import json
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from realparts import Process, child_env, database_url, start_gateway  # noqa: F401 - fixtures

KEYS = {"key-acme": "acme", "key-other": "other", "key-greedy": "greedy", "key-hog": "hog"}
MAX_BODY, MAX_FILE = 64 << 10, 128 << 10
MAX_MESSAGES, MAX_TOOLS, MAX_SCHEMA_BYTES, MAX_DEPTH = 16, 4, 2048, 24
GATEWAY_TOKENS_PER_S, WORKER_TOKENS_PER_S = 10, 50  # buckets of 10 s each: 100 and 500 tokens
MAX_BATCH_REQUESTS = 3
BROKER = "memory://"


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs-worker")
    env = {**child_env(), "DSV4_WORKER_TOKENS_PER_SECOND_PER_TENANT": str(WORKER_TOKENS_PER_S)}
    process = Process([sys.executable, "-m", "model_worker", "serve", "--config", "tiny", "--port", "0",
                       "--session-store", str(root / "sessions")], env, root / "worker.log")
    try:
        yield "127.0.0.1:" + process.wait_for(r"serving \S+ on 127\.0\.0\.1:(\d+)").group(1)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def jobs(database_url):  # noqa: F811 - fixture
    from foundation.sql import make_engine, sessions
    from services.jobs import celery_app
    from services.jobs.job_store import JobStore
    from services.jobs.server import build_server
    from services.jobs.settings import JobsSettings
    from services.jobs.use_cases import Jobs

    settings = JobsSettings(database_url=database_url, broker_url=BROKER, max_batch_requests=MAX_BATCH_REQUESTS)
    celery_app.configure(settings)
    engine = make_engine(database_url)
    jobs = Jobs(JobStore(sessions(engine)), celery_app.CeleryPublisher(), limits=settings.batch_limits())
    server, port = build_server(jobs, "127.0.0.1", 0)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=1).wait()
    engine.dispose()


@pytest.fixture(scope="module")
def gateways(tmp_path_factory, worker, jobs, database_url):  # noqa: F811 - fixtures
    """{"limited": the gateway with its own bucket, "open": the one without}, as base URLs; started one after the
    other (they migrate the same tables)."""
    bounds = dict(max_request_bytes=MAX_BODY, max_file_bytes=MAX_FILE, max_messages=MAX_MESSAGES,
                  max_tools=MAX_TOOLS, max_schema_bytes=MAX_SCHEMA_BYTES, max_json_depth=MAX_DEPTH)
    processes, urls = [], {}
    try:
        for name, own in (("limited", {"tokens_per_second_per_tenant": GATEWAY_TOKENS_PER_S}), ("open", {})):
            process, urls[name] = start_gateway(tmp_path_factory.mktemp(name), worker, jobs, database_url, KEYS,
                                                **bounds, **own)
            processes.append(process)
        yield urls
    finally:
        for process in processes:
            process.stop()


@pytest.fixture(scope="module")
def gateway(gateways) -> str:
    return gateways["limited"]


def call(base: str, method: str, path: str, body: bytes | Iterator[bytes] | None = None, key: str = "key-acme",
         content_type: str = "application/json") -> tuple[int, dict[str, str], dict]:
    """(status, headers, JSON body) of one request; an iterator body goes chunked, with no Content-Length."""
    url = urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    try:
        connection.request(method, path, body=body, encode_chunked=body is not None and not isinstance(body, bytes),
                           headers={"authorization": f"Bearer {key}", "content-type": content_type})
        reply = connection.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, json.loads(reply.read() or b"null")
    finally:
        connection.close()


def post_json(base: str, path: str, value: dict | str, key: str = "key-acme") -> tuple[int, dict[str, str], dict]:
    return call(base, "POST", path, (value if isinstance(value, str) else json.dumps(value)).encode(), key)


def assert_openai_error(status: int, body: dict, expected: int, word: str = "") -> None:
    assert status == expected, body
    error = body["error"]
    assert error["type"] == "invalid_request_error" and word in error["message"], error


def chat(content: str = "hi", **fields) -> dict:
    return {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 1, **fields}


def respond(**fields) -> dict:
    return {"model": "tiny", "input": "hi", "store": False, "max_output_tokens": 1, **fields}


def chunks(head: bytes, size: int, tail: bytes = b"") -> Iterator[bytes]:
    yield head
    for _ in range(size // (64 << 10)):
        yield b"x" * (64 << 10)
    yield tail


# -- bodies, bounded as they stream ------------------------------------------------------------------------------

def test_a_chunked_body_over_the_limit_is_413(gateway):
    body = chunks(b'{"model": "no-such-model", "messages": [{"role": "user", "content": "', 4 * MAX_BODY, b'"}]}')
    status, _, reply = call(gateway, "POST", "/v1/chat/completions", body)
    assert_openai_error(status, reply, 413, "over")
    assert reply["error"]["code"] == "request_too_large"


def test_a_chunked_multipart_upload_over_the_limit_is_413(gateway):
    """Many file parts, each under the file limit: the upload as a whole is what the bound holds."""
    part = (b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n'
            b'Content-Type: application/octet-stream\r\n\r\n' + b"x" * (MAX_FILE // 2) + b"\r\n")

    def upload() -> Iterator[bytes]:
        yield b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        for _ in range(40):  # 2.5 MiB in all, over the upload's limit (the file's plus 1 MiB)
            yield part
        yield b"--B--\r\n"

    status, _, reply = call(gateway, "POST", "/v1/files", upload(), content_type="multipart/form-data; boundary=B")
    assert_openai_error(status, reply, 413, "over")
    assert reply["error"]["code"] == "request_too_large"
    status, _, listed = call(gateway, "GET", "/v1/files")
    assert status == 200 and listed["data"] == []


# -- rate limits: 429 with Retry-After ---------------------------------------------------------------------------

def test_the_gateways_own_rate_limit_is_429_with_retry_after(gateway):
    greedy = chat("word " * 200)  # ~200 tokens charged: the 100-token bucket is left well short
    assert post_json(gateway, "/v1/chat/completions", greedy, "key-greedy")[0] == 200
    status, headers, reply = post_json(gateway, "/v1/chat/completions", chat(), "key-greedy")
    assert status == 429 and reply["error"]["type"] == "rate_limit_error", reply
    assert int(headers["retry-after"]) >= 1
    assert post_json(gateway, "/v1/chat/completions", chat(), "key-other")[0] == 200  # another tenant's bucket


def test_a_workers_rate_limit_is_429_with_retry_after(gateways):
    hog = chat("word " * 1000)  # ~1000 tokens: admitted on a full bucket of 500, which it leaves far short
    assert post_json(gateways["open"], "/v1/chat/completions", hog, "key-hog")[0] == 200
    for path, body in (("/v1/chat/completions", chat()), ("/v1/responses", respond())):
        status, headers, reply = post_json(gateways["open"], path, body, "key-hog")
        assert status == 429 and reply["error"]["code"] == "resource_exhausted", reply
        assert int(headers["retry-after"]) >= 1
    # The worker keeps a bucket per end user (the gateway acts for each), not one for the whole gateway.
    assert post_json(gateways["open"], "/v1/chat/completions", chat(), "key-other")[0] == 200


# -- malformed and oversized inputs: 400 -------------------------------------------------------------------------

TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
DEEP = "[" * 5000 + "]" * 5000
BAD_CHAT = {
    "a message without a role": chat() | {"messages": [{"content": "hi"}]},
    "a role that is not a string": chat() | {"messages": [{"role": 7, "content": "hi"}]},
    "content that is a number": chat() | {"messages": [{"role": "user", "content": 5}]},
    "content parts that are strings": chat() | {"messages": [{"role": "user", "content": ["hi"]}]},
    "an image part": chat() | {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
    "a text part whose text is a number": chat() | {"messages": [{"role": "user",
                                                                  "content": [{"type": "text", "text": 5}]}]},
    "tool_calls that are a string": chat() | {"messages": [{"role": "assistant", "tool_calls": "x"}]},
    "arguments that are not JSON": chat() | {"messages": [
        {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "nope"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "r"}]},
    "arguments nested too deep to parse": chat() | {"messages": [
        {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": DEEP}}]},
        {"role": "tool", "tool_call_id": "c", "content": "r"}]},
    "a json_schema that is a string": chat(response_format={"type": "json_schema", "json_schema": "{}"}),
    "a response_format type that is a list": chat(response_format={"type": ["json_object"]}),
    "tool_choice {function: f}": chat(tools=[TOOL], tool_choice={"function": "f"}),
    "tool_choice naming an unknown tool": chat(tools=[TOOL], tool_choice={"type": "function",
                                                                          "function": {"name": "g"}}),
    "a body nested too deep to parse": json.dumps(chat())[:-1] + f', "extra": {DEEP}}}',
}
BAD_RESPONSES = {
    "an effort that is a list": respond(reasoning={"effort": ["high"]}),
    "a text.format that is a string": respond(text={"format": "json"}),
    "content that is a number": respond(input=[{"type": "message", "role": "user", "content": 5}]),
    "a call_id that is a number": respond(input=[{"type": "function_call", "call_id": 5, "name": "f"},
                                                 {"type": "function_call_output", "call_id": 5, "output": "r"}]),
    "output parts that are strings": respond(input=[{"type": "function_call", "call_id": "c", "name": "f"},
                                                    {"type": "function_call_output", "call_id": "c", "output": ["r"]}]),
    "arguments nested too deep to parse": respond(input=[
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": DEEP},
        {"type": "function_call_output", "call_id": "c", "output": "r"}]),
    "tool_choice {function: f}": respond(tools=[{"type": "function", "name": "f"}], tool_choice={"function": "f"}),
}


def nested(levels: int) -> dict:
    value: dict = {"type": "object"}
    for _ in range(levels):
        value = {"type": "object", "properties": {"a": value}}
    return value


OVERSIZED = {  # each one step past the gateway's bound
    "messages": chat() | {"messages": [{"role": "user", "content": "hi"}] * (MAX_MESSAGES + 1)},
    "tools": chat(tools=[{"type": "function", "function": {"name": f"f{i}"}} for i in range(MAX_TOOLS + 1)]),
    "bytes": chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "description": "d" * MAX_SCHEMA_BYTES}}}]),
    "deep": chat(response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": nested(MAX_DEPTH)}}),
}


@pytest.mark.parametrize("name", BAD_CHAT)
def test_a_malformed_chat_request_is_400(gateway, name):
    assert_openai_error(*post_json(gateway, "/v1/chat/completions", BAD_CHAT[name])[::2], 400)


@pytest.mark.parametrize("name", BAD_RESPONSES)
def test_a_malformed_responses_request_is_400(gateway, name):
    assert_openai_error(*post_json(gateway, "/v1/responses", BAD_RESPONSES[name])[::2], 400)


@pytest.mark.parametrize("bound", OVERSIZED)
def test_an_input_over_its_bound_is_400(gateway, bound):
    assert_openai_error(*post_json(gateway, "/v1/chat/completions", OVERSIZED[bound])[::2], 400, bound)


@pytest.mark.parametrize("bad", ["%2E%2E", "a%20b", "a*b", "x" * 200])
def test_a_malformed_id_is_400(gateway, bad):
    for method, path in (("GET", f"/v1/files/{bad}"), ("GET", f"/v1/files/{bad}/content"),
                         ("DELETE", f"/v1/files/{bad}"), ("GET", f"/v1/files?after={bad}"),
                         ("GET", f"/v1/batches/{bad}"), ("POST", f"/v1/batches/{bad}/cancel"),
                         ("GET", f"/v1/batches?after={bad}"), ("GET", f"/v1/responses/{bad}"),
                         ("GET", f"/v1/responses/{bad}/input_items"), ("DELETE", f"/v1/responses/{bad}")):
        status, _, reply = call(gateway, method, path)
        assert_openai_error(status, reply, 400, "characters")
    bad = bad.replace("%2E", ".").replace("%20", " ")
    for path, body in (("/v1/responses", respond(store=True, previous_response_id=bad)),
                       ("/v1/batches", {"input_file_id": bad, "endpoint": "/v1/chat/completions",
                                        "completion_window": "24h"})):
        assert_openai_error(*post_json(gateway, path, body)[::2], 400, "characters")


# -- batches: the jobs service's bounds -----------------------------------------------------------------------------

def test_a_batch_over_the_jobs_services_bounds_is_413(gateway):
    lines = "".join(json.dumps({"custom_id": f"q-{i}", "body": chat()}) + "\n" for i in range(MAX_BATCH_REQUESTS + 1))
    upload = (b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--B\r\nContent-Disposition: '
              b'form-data; name="file"; filename="b.jsonl"\r\n\r\n' + lines.encode() + b"\r\n--B--\r\n")
    status, _, uploaded = call(gateway, "POST", "/v1/files", upload, content_type="multipart/form-data; boundary=B")
    assert status == 200, uploaded
    status, _, reply = post_json(gateway, "/v1/batches", {"input_file_id": uploaded["id"], "completion_window": "24h",
                                                          "endpoint": "/v1/chat/completions"})
    assert_openai_error(status, reply, 413, "requests")
    assert call(gateway, "GET", "/v1/batches")[2]["data"] == []
