"""Schemathesis against the OpenAPI document the gateway serves: every operation, called with generated requests as
two tenants (each with its own key), answers without a server error, and every answer (2xx or 4xx) is one the `openai`
SDK's types read (tests/security/gateway_shapes.py). Another tenant's objects are as absent as missing ones.

Real parts, as tests/services/gateway/conftest.py builds them: `python -m services.gateway` in front of a model worker
process (`tiny`) and the jobs service (its gRPC server, a Celery worker process, Redis, PostgreSQL). Schemathesis
generates each operation's requests (the schema's and ones it refuses); part of them are steered to the served model,
to objects that exist (this tenant's or the other's) and to the bad inputs the platform must refuse, and every
generation's length is bounded so each example is quick."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import gateway_shapes
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from realparts import Process, broker_url, child_env, database_url, jobs_service, model_worker, start_gateway  # noqa: F401
from schemathesis.generation import GenerationMode

KEYS = {"key-acme": "acme", "key-other": "other"}
EXAMPLES = {"POST /v1/chat/completions": 40, "POST /v1/responses": 40}  # the others: 20 each (19 operations)
SHORT = st.integers(1, 4)
REFERENCES = ("input_file_id", "previous_response_id")  # body fields that name a stored object
LENGTH_FIELDS = {"/v1/chat/completions": ("max_tokens", "max_completion_tokens"),
                 "/v1/responses": ("max_output_tokens",)}


def _deep_schema(depth: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


DEEP = _deep_schema(400)
BAD = {  # what the issue names, by route: each is refused (4xx) or served, never a 5xx; a length past the model's
    # context is refused, not generated
    "/v1/chat/completions": [
        {"messages": [{"content": "no role"}]}, {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        {"messages": [{"role": "user", "content": {"a": 1}}]}, {"messages": [{"role": 7, "content": "x"}]},
        {"messages": [{"role": "user", "content": "x", "tool_calls": "nope"}]}, {"messages": ["x"]},
        {"tool_choice": {"function": "f"}}, {"tool_choice": {"type": "function", "function": {"name": "missing"}}},
        {"response_format": {"type": "json_schema", "json_schema": "x"}},
        {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "string", "pattern": "("}}}},
        {"response_format": {"type": "json_schema", "json_schema": {"schema": DEEP}}},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": DEEP}}]},
        {"stop": ["s" * 2000] * 20}, {"logit_bias": {"-1": 5}}, {"seed": -1}, {"messages": [{"role": "tool"}]},
        {"max_tokens": 2**31 - 1}, {"max_completion_tokens": 10**30}, {"max_tokens": 2**31 - 1, "stream": True},
        {"messages": [{"role": "user", "content": "nul\x00inside"}]}, {"user": "nul\x00"}],
    "/v1/responses": [
        {"input": [{"role": "user"}]}, {"input": [{"type": "function_call_output"}]}, {"input": [7]},
        {"text": {"format": {"type": "json_schema", "schema": "x"}}}, {"tool_choice": {"function": "f"}},
        {"tools": [{"type": "function", "name": "f", "parameters": DEEP}]}, {"reasoning": {"effort": "ultra"}},
        {"previous_response_id": "../../x"}, {"instructions": 7}, {"stop": ["s" * 2000] * 20},
        {"background": True, "store": True}, {"max_output_tokens": 2**31 - 1}, {"max_output_tokens": 2**63 - 1},
        {"input": "nul\x00inside"}, {"instructions": "nul\x00"}, {"metadata": {"k": "nul\x00"}},
        {"input": "nul\x00inside", "background": True}],
    "/v1/batches": [{"metadata": {"k": "nul\x00"}}, {"metadata": {"nul\x00": "v"}}, {"completion_window": "\x00"},
                    {"input_file_id": "../../x"}, {"metadata": {f"k{i}": "v" for i in range(100)}}],
}


@dataclass
class LiveGateway:
    root_url: str
    process: Process
    model: str = ""
    owned: dict[str, str] = field(default_factory=dict)  # object ID -> its tenant
    kinds: dict[str, list[str]] = field(default_factory=dict)  # file, batch, response -> their IDs

    def real(self, kind: str) -> st.SearchStrategy[str]:
        return st.sampled_from(self.kinds[kind])


def _valid(live: LiveGateway, path: str) -> dict:
    """A valid body for the route (a generation's length is added where it is steered)."""
    if path == "/v1/chat/completions":
        return {"model": live.model, "messages": [{"role": "user", "content": "hi"}]}
    if path == "/v1/responses":
        return {"model": live.model, "input": [{"role": "user", "content": "hi"}]}
    if path == "/v1/files":
        return {"file": b'{"custom_id": "q"}\n', "purpose": "batch"}
    if path == "/v1/batches":
        return {"input_file_id": live.kinds["file"][0], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    return {}


def _objects(live: LiveGateway) -> None:
    """Real objects of each kind, acme's and some of other's: what generated IDs are steered to."""
    from openai import OpenAI

    clients = {tenant: OpenAI(base_url=f"{live.root_url}/v1", api_key=key, max_retries=0, timeout=120)
               for key, tenant in KEYS.items()}
    acme = clients["acme"]
    line = {"custom_id": "q", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": live.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
                     "reasoning_effort": "none"}}
    upload = acme.files.create(file=("in.jsonl", io.BytesIO(json.dumps(line).encode())), purpose="batch")
    batch = acme.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    stored = acme.responses.create(model=live.model, input="hi", max_output_tokens=2)
    background = acme.responses.create(model=live.model, input="hi", max_output_tokens=2, background=True,
                                       reasoning={"effort": "none"})
    their_file = clients["other"].files.create(file=("x.jsonl", io.BytesIO(b"{}\n")), purpose="batch")
    their_response = clients["other"].responses.create(model=live.model, input="hey", max_output_tokens=2)
    live.kinds = {"file": [upload.id, their_file.id], "batch": [batch.id],
                  "response": [stored.id, background.id, their_response.id], "model": [live.model]}
    live.owned = {upload.id: "acme", batch.id: "acme", stored.id: "acme", background.id: "acme",
                  their_file.id: "other", their_response.id: "other"}


@pytest.fixture(scope="module")
def live(tmp_path_factory, database_url, broker_url, model_worker):  # noqa: F811 - fixtures
    root = tmp_path_factory.mktemp("fuzz-gateway")
    target, _ = model_worker
    with jobs_service(root, database_url, broker_url, target) as jobs:
        process, url = start_gateway(root, target, jobs, database_url, KEYS, background_poll_seconds=0.2)
        try:
            gateway = LiveGateway(url, process)
            gateway.model = requests.get(f"{gateway.root_url}/v1/models", timeout=60,
                                         headers={"Authorization": "Bearer key-acme"}).json()["data"][0]["id"]
            _objects(gateway)
            yield gateway
        finally:
            process.stop()


def _steer_body(live: LiveGateway, path: str, body, draw):
    """Bodies as generated, valid but for one generated field, valid but for a known bad input, or valid; real IDs
    where a body names one; every generation's length bounded."""
    if not isinstance(body, dict):
        return body
    how = draw(st.sampled_from(["generated", "one field", "one field", "bad", "valid"]))
    base = _valid(live, path)
    bad = draw(st.sampled_from(BAD[path])) if how == "bad" and path in BAD else {}
    if how == "generated":
        changed = {**body, **({"model": live.model} if "model" in base and draw(st.integers(0, 3)) else {})}
    elif how == "valid":
        changed = {**base, "stream": draw(st.booleans())} if path in LENGTH_FIELDS else base
    else:
        keep = draw(st.sampled_from(sorted(body))) if body and not bad else None
        changed = {**base, **({keep: body[keep]} if keep else {})}
    if path == "/v1/responses" and not draw(st.integers(0, 4)):
        changed["previous_response_id"] = draw(live.real("response"))
    for name in LENGTH_FIELDS.get(path, ()):  # unset, a generation runs on to the model's context
        if isinstance(changed.get(name), int) or name == LENGTH_FIELDS[path][0]:
            changed[name] = draw(SHORT)
    return {**changed, **bad}


def _steer_ids(live: LiveGateway, values: dict | None, draw) -> dict | None:
    """Generated IDs, or (two times in three) real ones of the kind the route takes: the caller's or the other
    tenant's."""
    if not values:
        return values
    return {name: draw(live.real(name.removesuffix("_id"))) if draw(st.integers(0, 2)) else value
            for name, value in values.items()}


def _served_document() -> dict:
    """The OpenAPI document the gateway's app serves (built here to parametrize the tests; the live gateway is
    checked to serve the same one)."""
    from services.gateway.app import Gateway, create_app
    from services.gateway.settings import GatewaySettings

    return create_app(Gateway(GatewaySettings(), None, None)).openapi()


DOCUMENT = _served_document()
OPERATIONS = {op.label: op for op in (result.ok() for result in schemathesis.openapi.from_dict(DOCUMENT)
                                      .get_all_operations())}
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)  # requests the schema allows, and ones it does not


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_every_operation_answers_in_openai_shapes(live, label) -> None:
    operation = OPERATIONS[label]
    cases = st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in MODES))

    @settings(max_examples=EXAMPLES.get(label, 20), deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=cases, key=st.sampled_from(sorted(KEYS)), data=st.data())
    def fuzz(case, key, data) -> None:
        case.body = _steer_body(live, operation.path, case.body, data.draw)
        case.path_parameters = _steer_ids(live, case.path_parameters, data.draw)
        call(live, case, key)

    fuzz()


def call(live: LiveGateway, case, key: str) -> None:
    """The case sent as `key`'s tenant; its answer must be one the SDK reads, and another tenant's object absent."""
    before = live.process.log.stat().st_size
    response = case.call(base_url=live.root_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    sent = f"{case.method.upper()} {case.formatted_path} query={case.query} body={str(case.body)[:1500]} key={key}"
    try:
        assert not response.stream_cut_short, "the event stream did not end"
        gateway_shapes.check((case.method.upper(), case.operation.path), response.status_code,
                             (response.headers.get("content-type") or [""])[0], response.content)
    except Exception as failure:
        log = live.process.log.read_bytes()[before:].decode(errors="replace")[-4000:]
        raise AssertionError(f"{sent}\n-> {response.status_code} {response.content[:1500]!r}\n{failure}\n"
                             f"gateway log:\n{log}") from None
    named = [*(case.path_parameters or {}).values(), *(case.body.get(name) for name in REFERENCES
                                                         if isinstance(case.body, dict))]
    foreign = [v for v in named if isinstance(v, str) and live.owned.get(v, KEYS[key]) != KEYS[key]]
    assert not foreign or response.status_code in (400, 404), f"{sent}: another tenant's object answered " \
                                                              f"{response.status_code}"  # as a missing one would


KNOWN_BAD = [(path, i) for path, patches in BAD.items() for i in range(len(patches))]


@pytest.mark.parametrize(("path", "index"), KNOWN_BAD, ids=[f"{p.rsplit('/', 1)[-1]}-{i}" for p, i in KNOWN_BAD])
def test_every_known_bad_input_is_answered_in_openai_shapes(live, path, index) -> None:
    """Each known-bad input on an otherwise valid request, every one of them (the fuzzing draws only some)."""
    body = {**_valid(live, path), **{name: 2 for name in LENGTH_FIELDS.get(path, ())[:1]}, **BAD[path][index]}
    before = live.process.log.stat().st_size
    response = requests.post(f"{live.root_url}{path}", json=body, timeout=60,
                             headers={"Authorization": "Bearer key-acme"})
    try:
        gateway_shapes.check(("POST", path), response.status_code, response.headers.get("content-type", ""),
                             response.content)
    except Exception as failure:
        log = live.process.log.read_bytes()[before:].decode(errors="replace")[-4000:]
        raise AssertionError(f"POST {path} body={str(body)[:1500]}\n-> {response.status_code} "
                             f"{response.content[:1500]!r}\n{failure}\ngateway log:\n{log}") from None


def test_the_gateway_serves_the_fuzzed_document_and_stays_healthy(live) -> None:
    assert requests.get(f"{live.root_url}/openapi.json", timeout=30).json() == DOCUMENT
    assert requests.get(f"{live.root_url}/healthz", timeout=30).status_code == 200
