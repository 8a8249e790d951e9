"""Property-based fuzzing of Generate and the session RPCs against a real worker (bounded examples): whatever the
request, the answer is a stream or a deliberate status code (never INTERNAL or UNKNOWN), and the server keeps
serving."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_testlib import Worker

from protos.dsv4.worker.v1 import worker_pb2 as pb

DELIBERATE = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OUT_OF_RANGE,
              grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS,
              grpc.StatusCode.RESOURCE_EXHAUSTED}


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    from model_worker.engine.loading import load_model

    w = Worker(load_model(None, "tiny", numerics="official"), tmp_path_factory.mktemp("fuzz"))
    w.stub.CreateSession(pb.CreateSessionRequest(session_id="fuzzed", system_prompt="s"))
    yield w
    w.stop()


VOCAB = 129_280
WILD = {"temperature": st.floats(width=32), "top_p": st.floats(width=32), "min_p": st.floats(width=32),
        "repetition_penalty": st.floats(width=32), "frequency_penalty": st.floats(width=32),
        "top_k": st.integers(-(2**31), 2**31 - 1), "max_tokens": st.integers(-(2**31), 0),
        "top_logprobs": st.integers(-3, 5)}


@st.composite
def sampling(draw) -> pb.SamplingParams:
    """A valid request's sampling, then at most one field set to anything (most requests run; the rest probe
    validation)."""
    params = pb.SamplingParams(max_tokens=draw(st.integers(1, 3)))
    if draw(st.booleans()):
        params.temperature = draw(st.floats(0, 1.5, width=32))
    if draw(st.booleans()):
        params.top_p = draw(st.floats(0.25, 1, width=32))
    if draw(st.booleans()):
        params.top_k = draw(st.integers(0, 20))
    params.stop.extend(draw(st.lists(st.text(min_size=1, max_size=3), max_size=2)))
    params.stop_token_ids.extend(draw(st.lists(st.integers(0, VOCAB - 1), max_size=2)))
    params.logit_bias.update(draw(st.dictionaries(st.integers(0, VOCAB - 1), st.floats(-50, 50, width=32),
                                                  max_size=2)))
    wild = draw(st.sampled_from([None, None, *WILD]))
    if wild is not None:
        setattr(params, wild, draw(WILD[wild]))
    return params


ROLES = ["user"] * 6 + ["assistant", "tool", "system", ""]
messages = st.lists(st.builds(pb.ChatMessage, role=st.sampled_from(ROLES), content=st.text(max_size=20),
                              tool_call_id=st.text(max_size=3)), max_size=3)


@st.composite
def generate_requests(draw) -> pb.GenerateRequest:
    request = pb.GenerateRequest(session_id=draw(st.sampled_from(["", "", "fuzzed", "fuzzed", "missing", "../x"])),
                                 mode=draw(st.sampled_from([0, 1, 2, 0, 1, 2, 3, 7])),
                                 priority=draw(st.sampled_from([0, 1, 2, 0, 1, 2, 9])), sampling=draw(sampling()))
    kind = draw(st.sampled_from(["tokens", "tokens", "messages", "messages", "none"]))
    if kind == "tokens":
        valid = st.integers(0, VOCAB - 1)
        request.token_ids.ids.extend(draw(st.lists(st.one_of(valid, valid, valid, st.integers(-5, 200_000)),
                                                   max_size=4)))
    elif kind == "messages":
        request.messages.messages.extend(draw(messages))
    if draw(st.integers(0, 5)) == 0:
        request.tools.add(name=draw(st.one_of(st.just("f"), st.text(max_size=5))),
                          parameters_json=draw(st.sampled_from(["{}", "[", ""])))
    if draw(st.integers(0, 4)) == 0:
        choice = draw(st.sampled_from(["auto", "none", "required", "function"]))
        if choice == "function":
            request.tool_choice.function = draw(st.sampled_from(["", "f", "missing"]))
        else:
            setattr(request.tool_choice, choice, True)
    if draw(st.integers(0, 5)) == 0:
        request.response_format.json_schema = draw(st.sampled_from(
            ['{"type": "integer", "minimum": 0, "maximum": 9}', '{"enum": ["a", "b"]}', "[", '"x"',
             '{"type": "string", "format": "no-such-format"}']))
    if draw(st.booleans()):
        request.commit_every = draw(st.integers(-2, 3))
    return request


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=generate_requests())
def test_generate_never_fails_internally(worker, request) -> None:
    try:
        responses = list(worker.stub.Generate(request, timeout=60))
        assert responses[-1].WhichOneof("event") == "final"
    except grpc.RpcError as error:
        assert error.code() in DELIBERATE, (error.code(), error.details())
    assert worker.stub.GetLoad(pb.GetLoadRequest()).running_requests >= 0  # still serving


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(session_id=st.text(max_size=8), commit=st.integers(-3, 50), page=st.integers(-2, 2000))
def test_session_rpcs_never_fail_internally(worker, session_id, commit, page) -> None:
    calls = [lambda: worker.stub.GetSession(pb.GetSessionRequest(session_id=session_id)),
             lambda: worker.stub.RewindSession(pb.RewindSessionRequest(session_id=session_id, commit=commit)),
             lambda: worker.stub.ForkSession(pb.ForkSessionRequest(session_id="fuzzed", commit=commit,
                                                                   new_session_id=session_id)),
             lambda: worker.stub.ListSessions(pb.ListSessionsRequest(page_size=page, page_token=session_id)),
             lambda: worker.stub.Detokenize(pb.DetokenizeRequest(ids=[commit, page]))]
    for call in calls:
        try:
            call()
        except grpc.RpcError as error:
            assert error.code() in DELIBERATE, (error.code(), error.details())
