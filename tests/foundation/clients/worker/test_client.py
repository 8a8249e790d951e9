"""The blocking client against a real grpc server serving a scripted fake (conftest.py): what goes on the wire, what
comes back, errors, retries and deadlines."""

from __future__ import annotations

import json

import grpc
import pytest

from foundation.clients.worker import (
    Delta,
    Final,
    Message,
    Sampling,
    Tool,
    ToolCall,
    WorkerClient,
    convert,
    errors,
    policy,
)
from protos.dsv4.worker.v1 import worker_pb2 as pb

SEARCH = Tool("search", "Search the docs", {"type": "object", "properties": {"query": {"type": "string"}}})


def client(target: str, **kwargs) -> WorkerClient:
    kwargs.setdefault("backoff", 0.001)
    return WorkerClient(target, **kwargs)


def test_sampling_sends_only_the_fields_set(worker):
    fake, target = worker
    with client(target) as c:
        c.generate_text(token_ids=[1, 2], sampling=Sampling(temperature=0.0, max_tokens=16, seed=7, stop=["\n\n"]))
        c.generate_text(token_ids=[1, 2])
    sent, default = fake.requests("Generate")
    sampling = sent.sampling
    assert sampling.HasField("temperature") and sampling.temperature == 0.0
    assert sampling.max_tokens == 16 and sampling.seed == 7 and list(sampling.stop) == ["\n\n"]
    unset = set(convert.SAMPLING_SCALARS) - {"temperature", "max_tokens", "seed"}
    assert not any(sampling.HasField(name) for name in unset)
    assert not default.HasField("sampling")
    assert list(sent.token_ids.ids) == [1, 2] and sent.WhichOneof("input") == "token_ids"


def test_sampling_round_trip():
    sampling = Sampling(top_p=0.5, top_k=40, logit_bias={5: -100.0}, stop_token_ids=[2], ignore_eos=False)
    assert convert.sampling_from_proto(convert.sampling_to_proto(sampling)) == sampling
    assert convert.sampling_from_proto(pb.SamplingParams()) == Sampling()


def test_request_conversion(worker):
    fake, target = worker
    history = [
        Message("system", "be brief"),
        Message("user", "find kv"),
        Message("assistant", "", "let me look", [ToolCall("call_0", "search", {"query": "kv", "n": [1, 2]})]),
        Message("tool", '{"hits": 1}', tool_call_id="call_0", name="search"),
    ]
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    with client(target) as c:
        c.generate_text(
            messages=history, tools=[SEARCH], mode="think-high", tool_choice="search", response_format=schema,
            priority="batch", request_id="req-9", commit_every=64,
        )  # fmt: skip
    (request,) = fake.requests("Generate")
    assert [convert.message_from_proto(m) for m in request.messages.messages] == history
    assert json.loads(request.messages.messages[2].tool_calls[0].arguments_json) == {"query": "kv", "n": [1, 2]}
    assert convert.tool_from_proto(request.tools[0]) == SEARCH
    assert json.loads(request.tools[0].parameters_json) == SEARCH.parameters
    assert request.mode == pb.THINK_HIGH and request.priority == pb.BATCH
    assert request.tool_choice.WhichOneof("choice") == "function" and request.tool_choice.function == "search"
    assert json.loads(request.response_format.json_schema) == schema
    assert request.request_id == "req-9" and request.HasField("commit_every") and request.commit_every == 64
    assert request.session_id == ""


@pytest.mark.parametrize("choice", ["auto", "none", "required"])
def test_tool_choice_flags(worker, choice):
    fake, target = worker
    with client(target) as c:
        c.generate_text(session_id="s", messages=[Message("user", "hi")], tool_choice=choice)
    (request,) = fake.requests("Generate")
    assert request.tool_choice.WhichOneof("choice") == choice
    assert not request.HasField("commit_every") and request.mode == pb.REASONING_MODE_UNSPECIFIED


def test_stream_order_and_events(worker):
    _, target = worker
    with client(target) as c:
        events = list(c.generate(messages=[Message("user", "hi")]))
    assert [type(e) for e in events] == [Delta, Delta, Delta, ToolCall, Final]
    assert events[0] == Delta("thinking", True, [7])
    assert events[1].logprobs[0].token_id == 8 and events[1].logprobs[0].top == [(9, -1.5)]
    assert events[3] == ToolCall("call_1", "search", {"query": "kv cache", "top_k": 3})
    final = events[4]
    assert final.finish_reason == "tool_calls" and final.request_id == "r1"
    assert final.usage.prompt_tokens == 5 and final.usage.session_tokens == 9 and not final.usage.session_rebuilt
    assert final.tool_calls == [events[3]]


def test_generate_text(worker):
    _, target = worker
    with client(target) as c:
        final, text = c.generate_text(messages=[Message("user", "hi")])
    assert text == "Hello, world" and final.content == "Hello, world" and final.reasoning_content == "thinking"


def test_stream_without_final_is_a_protocol_error(worker):
    fake, target = worker
    fake.events = fake.events[:2]
    with client(target) as c, pytest.raises(errors.ProtocolError):
        c.generate_text(token_ids=[1])


def test_closing_the_stream_cancels_the_generation(worker):
    fake, target = worker
    fake.endless = True
    with client(target) as c:
        stream = c.generate(token_ids=[1])
        assert next(stream).text == "x"
        stream.close()
        assert fake.cancelled.wait(5)


def test_bearer_metadata(worker):
    fake, target = worker
    with client(target, api_key="sk-123") as c:
        c.get_session("s")
        list(c.generate(token_ids=[1]))
    with client(target) as c:
        c.get_session("s")
    with_key = fake.metadata("GetSession")[0], fake.metadata("Generate")[0]
    assert all(md["authorization"] == "Bearer sk-123" for md in with_key)
    assert "authorization" not in fake.metadata("GetSession")[1]


CODES = [code for code in grpc.StatusCode if code is not grpc.StatusCode.OK]


@pytest.mark.parametrize("code", CODES, ids=lambda code: code.name)
def test_status_codes_map_to_errors(worker, code):
    fake, target = worker
    fake.fail("GetSession", code, details=f"failed with {code.name}")
    with client(target, retries=0) as c, pytest.raises(errors.WorkerError) as caught:
        c.get_session("s")
    error = caught.value
    assert type(error).CODE is code and error.code is code and error.details == f"failed with {code.name}"


def test_error_classes():
    assert issubclass(errors.NotFound, errors.WorkerError) and errors.NotFound.CODE is grpc.StatusCode.NOT_FOUND
    assert errors.InvalidArgument("bad").code is grpc.StatusCode.INVALID_ARGUMENT


def test_resource_exhausted_carries_retry_after(worker):
    fake, target = worker
    fake.fail("Generate", grpc.StatusCode.RESOURCE_EXHAUSTED, details="queue full", trailing=[("retry-after", "2.5")])
    fake.fail("Generate", grpc.StatusCode.RESOURCE_EXHAUSTED)
    with client(target) as c:
        with pytest.raises(errors.ResourceExhausted) as caught:
            c.generate_text(token_ids=[1])
        assert caught.value.retry_after == 2.5 and caught.value.details == "queue full"
        with pytest.raises(errors.ResourceExhausted) as caught:
            c.generate_text(token_ids=[1])
        assert caught.value.retry_after is None
    assert len(fake.requests("Generate")) == 2  # not retried


def test_unary_retries_on_unavailable(worker):
    fake, target = worker
    fake.fail("GetSession", grpc.StatusCode.UNAVAILABLE, times=2)
    with client(target, retries=3) as c:
        assert c.get_session("s").tokens == 42
    assert len(fake.requests("GetSession")) == 3


def test_unary_gives_up_after_the_retries(worker):
    fake, target = worker
    fake.fail("GetLoad", grpc.StatusCode.UNAVAILABLE, times=5)
    with client(target, retries=2) as c, pytest.raises(errors.Unavailable):
        c.load()
    assert len(fake.requests("GetLoad")) == 3


def test_only_unavailable_is_retried(worker):
    fake, target = worker
    fake.fail("GetSession", grpc.StatusCode.INTERNAL)
    with client(target, retries=3) as c, pytest.raises(errors.Internal):
        c.get_session("s")
    assert len(fake.requests("GetSession")) == 1


def test_append_is_never_retried(worker):
    fake, target = worker
    fake.fail("AppendSession", grpc.StatusCode.UNAVAILABLE)
    with client(target, retries=3) as c, pytest.raises(errors.Unavailable):
        c.append("s", [Message("user", "more")])
    assert len(fake.requests("AppendSession")) == 1


def test_generate_retries_before_the_first_event(worker):
    fake, target = worker
    fake.fail("Generate", grpc.StatusCode.UNAVAILABLE, times=2)
    with client(target, retries=3) as c:
        final, text = c.generate_text(token_ids=[1])
    assert text == "Hello, world" and final.finish_reason == "tool_calls"
    assert len(fake.requests("Generate")) == 3


def test_generate_is_not_retried_once_an_event_arrived(worker):
    fake, target = worker
    fake.abort_after = (1, grpc.StatusCode.UNAVAILABLE)
    received = []
    with client(target, retries=3) as c, pytest.raises(errors.Unavailable):
        for event in c.generate(token_ids=[1]):
            received.append(event)
    assert len(received) == 1 and len(fake.requests("Generate")) == 1


def test_deadlines(worker):
    fake, target = worker
    fake.hang = {"GetSession", "Generate"}
    with client(target, timeout=0.2) as c:
        with pytest.raises(errors.DeadlineExceeded):
            c.get_session("s")
        with pytest.raises(errors.DeadlineExceeded):
            c.generate_text(token_ids=[1], timeout=0.1)
        assert c.load(timeout=5).running_requests == 5


def test_retries_stay_within_the_deadline(worker):
    fake, target = worker
    fake.fail("GetLoad", grpc.StatusCode.UNAVAILABLE, times=5)
    with client(target, retries=5, backoff=1.0, timeout=0.3) as c, pytest.raises(errors.Unavailable):
        c.load()
    assert len(fake.requests("GetLoad")) == 1  # the first backoff would outlast the deadline


def test_sessions(worker):
    fake, target = worker
    with client(target) as c:
        created = c.create_session(system_prompt="sys", tools=[SEARCH], think_max=True, session_id="a")
        assert created.session_id == "a" and created.think_max
        assert c.append("a", token_ids=[4, 5], mode="non-think").commit == 2
        assert c.fork("a").commit == 7 and c.fork("a", commit=0, new_session_id="b").session_id == "b"
        assert c.rewind("a", 1).commit == 1
        info = c.get_session("a")
        c.delete_session("a")
    assert info.commits_retained == [1, 2, 3] and info.bytes_by_tier == {"hbm": 1024, "disk": 4096}
    assert info.parent == "p" and info.reused_prefix_tokens == 16
    (create,) = fake.requests("CreateSession")
    assert create.system_prompt == "sys" and convert.tool_from_proto(create.tools[0]) == SEARCH
    (append,) = fake.requests("AppendSession")
    assert list(append.token_ids.ids) == [4, 5] and append.mode == pb.NON_THINK
    first, second = fake.requests("ForkSession")
    assert not first.HasField("commit") and second.HasField("commit") and second.commit == 0
    assert fake.requests("DeleteSession")[0].session_id == "a"


def test_list_sessions_pages(worker):
    fake, target = worker
    with client(target) as c:
        assert c.list_sessions(page_size=2) == ["s0", "s1", "s2", "s3", "s4"]
    assert [r.page_token for r in fake.requests("ListSessions")] == ["", "2", "4"]


def test_export_writes_the_file(worker, tmp_path):
    _, target = worker
    path = tmp_path / "s.dsv4"
    with client(target) as c:
        assert c.export_session("a", path) == len(b"DSV4-session-bytes")
    assert path.read_bytes() == b"DSV4-session-bytes"


def test_failed_export_leaves_no_file(worker, tmp_path):
    fake, target = worker
    fake.abort_after = (2, grpc.StatusCode.DATA_LOSS)
    with client(target) as c, pytest.raises(errors.DataLoss):
        c.export_session("a", tmp_path / "s.dsv4")
    assert list(tmp_path.iterdir()) == []


def test_tokens_and_worker_info(worker):
    fake, target = worker
    with client(target) as c:
        assert c.tokenize("hello") == [1, 2, 3]
        assert c.tokenize(messages=[Message("user", "hi")], mode="think-max", tools=[SEARCH]) == [1, 2, 3]
        assert c.detokenize([4, 5]) == "4 5"
        assert c.abort("r1") and not c.abort("r2")
        info, load = c.model_info(), c.load()
    text, chat = fake.requests("Tokenize")
    assert text.text == "hello" and chat.mode == pb.THINK_MAX and chat.messages.messages[0].content == "hi"
    assert info.max_context == 1 << 20 and info.reasoning_modes[-1] == "think-max"
    assert load.kv_bytes_by_tier == {"hbm": 7} and load.tokens_per_second == 123.5


def test_bad_arguments_fail_before_sending(worker):
    fake, target = worker
    with client(target) as c:
        with pytest.raises(ValueError):
            c.generate(messages=[Message("user", "hi")], token_ids=[1])
        with pytest.raises(ValueError):
            c.generate(token_ids=[1], mode="think-hard")
        with pytest.raises(ValueError):
            c.generate()
        with pytest.raises(ValueError):
            c.tokenize()
        with pytest.raises(TypeError):
            c.append("s", Message("user", "hi"))
    with pytest.raises(ValueError):
        WorkerClient(target, retries=100)
    assert fake.calls == []


def test_channel_options():
    options = dict(policy.channel_options([("grpc.keepalive_time_ms", 60_000), ("grpc.primary_user_agent", "x")]))
    assert options["grpc.max_send_message_length"] == options["grpc.max_receive_message_length"] == 256 << 20
    assert options["grpc.keepalive_time_ms"] == 60_000 and options["grpc.keepalive_timeout_ms"] == 10_000
    assert options["grpc.keepalive_permit_without_calls"] == 1 and options["grpc.primary_user_agent"] == "x"
