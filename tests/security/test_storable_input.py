"""Input that no store keeps, sent as a tenant would over the public APIs: a NUL character (PostgreSQL's text and JSONB
columns refuse it) or NaN / Infinity (not JSON, so not JSONB) anywhere in a request is the client's mistake, refused
with a status naming the field where the request enters the service (foundation/storable.py), never INTERNAL or 500;
an upstream's internal failure reaches a gateway client as a 502 with no detail of it; and a Response's usage is one
the `openai` SDK reads, its cache_write_tokens what this request computed and left in the conversation's session.

Real parts: the jobs gRPC server (in this process, on PostgreSQL, its broker an in-process one: no batch here needs to
run), the agent service and the gateway as processes, a model worker process (`tiny`), one key table with two tenants
and the services' own key."""

from __future__ import annotations

import json
import math
import sys

import grpc
import pytest
import requests
import sqlalchemy
from google.protobuf.message import Message
from openai.types.chat import ChatCompletion
from openai.types.responses import Response
from realparts import Process, child_env, database_url, model_worker, start_gateway  # noqa: F401 - fixtures

from protos.dsv4.agent.v1 import agent_pb2, agent_pb2_grpc
from protos.dsv4.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from protos.dsv4.worker.v1 import worker_pb2

KEYS = {"key-acme": "acme", "key-other": "other"}
SERVICE_KEY = "key-platform"
ACME = [("authorization", "Bearer key-acme")]
INVALID = grpc.StatusCode.INVALID_ARGUMENT
SHORT = worker_pb2.SamplingParams(temperature=0, max_tokens=2)
USER = [worker_pb2.ChatMessage(role="user", content="hi")]


@pytest.fixture(scope="module")
def key_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("storable") / "keys.json"
    path.write_text(json.dumps({**KEYS, SERVICE_KEY: {"tenant": "platform", "service": True}}))
    return path


@pytest.fixture(scope="module")
def jobs(database_url, key_file):  # noqa: F811 - fixture
    from foundation.auth import load_api_keys
    from foundation.sql import make_engine, sessions
    from services.jobs import celery_app
    from services.jobs.job_store import JobStore
    from services.jobs.server import build_server
    from services.jobs.settings import JobsSettings
    from services.jobs.use_cases import Jobs

    settings = JobsSettings(database_url=database_url, broker_url="memory://")
    celery_app.configure(settings)
    engine = make_engine(database_url)
    jobs = Jobs(JobStore(sessions(engine)), celery_app.CeleryPublisher(), limits=settings.batch_limits())
    server, port = build_server(jobs, "127.0.0.1", 0, load_api_keys(str(key_file)))
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield f"127.0.0.1:{port}", jobs_pb2_grpc.JobsStub(channel)
    channel.close()
    server.stop(grace=1).wait()
    engine.dispose()


@pytest.fixture(scope="module")
def agent(model_worker, database_url, key_file):  # noqa: F811 - fixtures
    root = key_file.parent
    process = Process([sys.executable, "-m", "agent_runtime", "serve", "--port", "0", "--worker", model_worker[0],
                       "--database", database_url, "--api-keys", str(key_file)],
                      {**child_env(), "DSV4_AGENT_WORKSPACE": str(root)}, root / "agent.log")
    channel = None
    try:
        channel = grpc.insecure_channel("127.0.0.1:" + process.wait_for(r"agent service on 127\.0\.0\.1:(\d+)")
                                        .group(1))
        yield agent_pb2_grpc.AgentServiceStub(channel)
    finally:
        if channel is not None:
            channel.close()
        process.stop()


@pytest.fixture(scope="module")
def gateway(model_worker, database_url, jobs, key_file):  # noqa: F811 - fixtures
    process, url = start_gateway(key_file.parent, model_worker[0], jobs[0], database_url, key_file,
                                 jobs_api_key=SERVICE_KEY)
    try:
        yield url, process
    finally:
        process.stop()


def status_of(call, request) -> tuple[grpc.StatusCode, str]:
    try:
        outcome = call(request, metadata=ACME, timeout=60)
        if not isinstance(outcome, Message):
            list(outcome)  # a stream: its status comes at its end
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        return error.code(), error.details()


def job(**fields) -> jobs_pb2.JobRequest:
    return jobs_pb2.JobRequest(**{"custom_id": "q", "messages": USER, "mode": worker_pb2.NON_THINK,
                                  "sampling": SHORT, **fields})


def batch(**fields) -> jobs_pb2.CreateBatchRequest:
    return jobs_pb2.CreateBatchRequest(**{"requests": jobs_pb2.JobRequests(requests=[fields.pop("line", job())]),
                                          **fields})


def test_a_batch_holding_a_nul_or_a_nan_is_refused_naming_the_field(jobs):
    _, stub = jobs
    before = len(stub.ListBatches(jobs_pb2.ListBatchesRequest(limit=100), metadata=ACME).batches)
    refused = {  # the field the refusal names: each reached a JSONB or text column as INTERNAL before
        "metadata": batch(metadata={"0": "\x00"}),
        "metadata['nul\\x00key']": batch(metadata={"nul\x00key": "v"}),
        "webhook_url": batch(webhook_url="https://example.com/\x00"),
        "custom_id": batch(line=job(custom_id="q\x00")),
        "messages[0].content": batch(line=job(messages=[worker_pb2.ChatMessage(role="user", content="a\x00b")])),
        "sampling.stop[0]": batch(line=job(sampling=worker_pb2.SamplingParams(max_tokens=2, stop=["\x00"]))),
        "tool_choice.function": batch(line=job(tool_choice=worker_pb2.ToolChoice(function="f\x00"))),
        "sampling.temperature": batch(line=job(sampling=worker_pb2.SamplingParams(temperature=math.nan))),
        "sampling.presence_penalty": batch(line=job(sampling=worker_pb2.SamplingParams(presence_penalty=-math.inf))),
        "sampling.logit_bias[5]": batch(line=job(sampling=worker_pb2.SamplingParams(logit_bias={5: math.inf}))),
        "jsonl": jobs_pb2.CreateBatchRequest(jsonl='{"custom_id": "q"\x00}'),
    }
    for field, request in refused.items():
        code, details = status_of(stub.CreateBatch, request)
        assert code == INVALID and field in details, (field, code, details)
    assert len(stub.ListBatches(jobs_pb2.ListBatchesRequest(limit=100), metadata=ACME).batches) == before
    # In JSONL text a NUL is the escape \u0000 and NaN a token Python's parser takes: each such line is invalid, the
    # valid one runs.
    line = {"custom_id": "ok", "body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}}
    lines = [json.dumps(line), json.dumps({**line, "custom_id": "nul", "metadata": {"k": "\x00"}}),
             json.dumps({**line, "custom_id": "nan", "body": {**line["body"], "temperature": math.nan}}),
             json.dumps({**line, "custom_id": "\x00"})]
    accepted = stub.CreateBatch(jobs_pb2.CreateBatchRequest(jsonl="\n".join(lines)), metadata=ACME)
    assert accepted.request_counts.total == 1
    assert [(e.line, "NUL" in e.message or "NaN" in e.message) for e in accepted.errors] == \
        [(2, True), (3, True), (4, True)]


def test_an_agent_turn_with_sampling_the_worker_refuses_is_invalid_argument_and_never_stored(agent):
    stub = agent
    stub.CreateSession(agent_pb2.CreateSessionRequest(session_id="st-acme"), metadata=ACME, timeout=60)
    for sampling in (worker_pb2.SamplingParams(temperature=math.nan, max_tokens=2),
                     worker_pb2.SamplingParams(top_p=math.inf, max_tokens=2),
                     worker_pb2.SamplingParams(logit_bias={7: -math.inf}, max_tokens=2),
                     worker_pb2.SamplingParams(temperature=-1, max_tokens=2)):  # finite, but out of the worker's range
        request = agent_pb2.RunTurnRequest(session_id="st-acme", messages=USER, mode=worker_pb2.NON_THINK,
                                           sampling=sampling)
        code, details = status_of(stub.RunTurn, request)
        assert code == INVALID, (str(sampling), code, details)
    turns = stub.ListTurns(agent_pb2.ListTurnsRequest(session_id="st-acme"), metadata=ACME, timeout=60).turns
    assert list(turns) == []
    code, details = status_of(stub.CreateSession, agent_pb2.CreateSessionRequest(session_id="st-2",
                                                                                 system_prompt="be\x00"))
    assert code == INVALID and "system_prompt" in details, details


def post(base: str, path: str, body: dict | str, key: str = "key-acme") -> requests.Response:
    data = body if isinstance(body, str) else json.dumps(body)
    return requests.post(f"{base}/v1{path}", data=data, timeout=60,
                         headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})


def refused(reply: requests.Response, *named: str) -> bool:
    error = reply.json().get("error") if reply.headers.get("content-type", "").startswith("application/json") \
        else None
    return reply.status_code == 400 and error is not None and all(name in error["message"] for name in named)


def test_the_gateway_refuses_text_and_numbers_no_store_keeps_with_400(gateway):
    base, _ = gateway
    model = requests.get(f"{base}/v1/models", headers={"Authorization": "Bearer key-acme"}, timeout=60) \
        .json()["data"][0]["id"]
    responses = {"model": model, "input": "hi", "max_output_tokens": 2}
    cases = [  # (path, body, what the message names): 500, or a 502 with the jobs service's SQL, before
        ("/responses", {**responses, "input": "nul\x00inside"}, ("body.input", "NUL")),
        ("/responses", {**responses, "instructions": "nul\x00"}, ("body.instructions",)),
        ("/responses", {**responses, "metadata": {"k": "nul\x00"}}, ("body.metadata.k",)),
        ("/responses", {**responses, "input": "nul\x00", "background": True}, ("body.input",)),
        ("/responses", json.dumps({**responses, "background": True})[:-1] + ', "temperature": NaN}', ("NaN",)),
        ("/chat/completions", {"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": "a\x00"}]},
         ("body.messages[0].content",)),
        ("/batches", {"input_file_id": "file-x", "endpoint": "/v1/chat/completions", "completion_window": "24h",
                      "metadata": {"k": "nul\x00"}}, ("body.metadata.k",)),
    ]
    for path, body, named in cases:
        reply = post(base, path, body)
        assert refused(reply, *named), (path, str(body)[:200], reply.status_code, reply.text[:500])
    auth = {"Authorization": "Bearer key-acme"}
    upload = requests.post(f"{base}/v1/files", headers=auth, data={"purpose": "batch"}, timeout=60,
                           files={"file": ("in\x00.jsonl", b'{"custom_id": "q"}\n')})
    assert refused(upload, "filename"), (upload.status_code, upload.text[:300])
    listed = requests.get(f"{base}/v1/files", params={"purpose": "\x00"}, headers=auth, timeout=60)
    assert refused(listed, "purpose"), (listed.status_code, listed.text[:300])
    assert requests.get(f"{base}/v1/files", headers=auth, timeout=60).json()["data"] == []  # nothing was stored
    assert requests.get(f"{base}/healthz", timeout=30).status_code == 200


def test_an_upstream_internal_failure_reaches_the_client_without_its_details(gateway, database_url):  # noqa: F811
    base, process = gateway
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.begin() as connection:  # the jobs service's table gone: every read of it fails internally
            connection.exec_driver_sql("ALTER TABLE batches RENAME TO batches_away")
        logged = process.log.stat().st_size
        reply = requests.get(f"{base}/v1/batches", headers={"Authorization": "Bearer key-acme"}, timeout=60)
    finally:
        with engine.begin() as connection:
            connection.exec_driver_sql("ALTER TABLE batches_away RENAME TO batches")
        engine.dispose()
    assert reply.status_code == 502, reply.text[:500]
    message = reply.json()["error"]["message"]
    assert "INTERNAL" in message and "batches" not in message and "SELECT" not in message, message
    assert '"batches" does not exist' in process.log.read_text()[logged:]  # the details are the operator's


def test_a_response_s_usage_counts_what_it_wrote_to_the_session(gateway):
    base, _ = gateway
    headers = {"Authorization": "Bearer key-acme"}
    model = requests.get(f"{base}/v1/models", headers=headers, timeout=60).json()["data"][0]["id"]

    def create(**fields) -> Response:
        reply = post(base, "/responses", {"model": model, "max_output_tokens": 2, **fields})
        assert reply.status_code == 200, reply.text[:500]
        return Response.model_validate(reply.json())  # the SDK's type: every field it requires is there

    first = create(input="hello there", instructions="be brief")
    usage = first.usage.input_tokens_details
    assert usage.cached_tokens == 0 and usage.cache_write_tokens == first.usage.input_tokens > 0  # all prefilled, kept
    later = create(input="and then?", previous_response_id=first.id)
    usage = later.usage.input_tokens_details
    assert usage.cached_tokens > 0 and usage.cache_write_tokens == later.usage.input_tokens - usage.cached_tokens > 0
    unstored = create(input="hello there", store=False)
    assert unstored.usage.input_tokens_details.cache_write_tokens == 0  # no session keeps it
    chat = post(base, "/chat/completions", {"model": model, "max_tokens": 2,
                                            "messages": [{"role": "user", "content": "hi"}]})
    completion = ChatCompletion.model_validate(chat.json())
    assert completion.usage.prompt_tokens_details.cache_write_tokens == 0  # stateless: nothing kept
