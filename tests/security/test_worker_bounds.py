"""What a client sends to the model worker's generation path, bounded: tried as a hostile tenant would, over gRPC with
two tenants' keys against a real in-process worker (the `tiny` engine with a 128-token context, sessions on disk).
Stop strings, generation length and the KV reservation, message / tool / schema sizes and nesting, and malformed
chat input; every refusal is a clear status, and the other tenant is served throughout."""

from __future__ import annotations

import json
import tracemalloc

import grpc
import pytest

from foundation.serving import CHANNEL_OPTIONS
from foundation.wire import InputLimits
from model_worker.config import TINY
from model_worker.engine.loading import load_model
from model_worker.sampling import SamplingParams, StopChecker
from model_worker.server.serve import serve_in_process
from model_worker.server.settings import WorkerSettings
from model_worker.sessions import open_blobs
from protos.dsv4.worker.v1 import worker_pb2 as pb
from protos.dsv4.worker.v1 import worker_pb2_grpc

CONTEXT = 128  # the model's max_seq_len: small, so running into it is quick
KEYS = {"key-alice": "alice", "key-bob": "bob"}
ALICE = (("authorization", "Bearer key-alice"),)
BOB = (("authorization", "Bearer key-bob"),)
FORCED = 100  # a token that logit_bias makes the greedy choice; as a stop token it ends a reply after one token
DEEP = "[" * 5000 + "]" * 5000  # past the parser's recursion limit
NESTED = '{"type": "object", "properties": {"a": ' * 40 + "{}" + "}}" * 40  # 81 levels: parses, but too deep


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    config = tmp_path_factory.mktemp("config") / "config.json"
    config.write_text(json.dumps(TINY.replace(max_seq_len=CONTEXT).to_official_dict()))
    return load_model(None, str(config), numerics="official")


class Worker:
    def __init__(self, model, root, **options) -> None:
        self.served = serve_in_process(model, open_blobs(str(root)), api_keys=KEYS, token_budget=256, **options)
        self.runtime = self.served.runtime
        self.channel = grpc.insecure_channel(self.served.address, options=CHANNEL_OPTIONS)
        self.stub = worker_pb2_grpc.ModelWorkerStub(self.channel)

    def generate(self, who, timeout: float = 60, **fields) -> pb.Final:
        responses = list(self.stub.Generate(pb.GenerateRequest(**fields), metadata=who, timeout=timeout))
        return responses[-1].final

    def code(self, who, method: str, timeout: float = 60, **fields) -> grpc.StatusCode:
        """The status of a call expected to be refused (OK when it was not)."""
        request = getattr(pb, f"{method}Request")(**fields)
        try:
            reply = getattr(self.stub, method)(request, metadata=who, timeout=timeout)
            if method == "Generate":
                list(reply)
        except grpc.RpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    def serves_bob(self) -> bool:
        final = self.generate(BOB, token_ids=pb.TokenIds(ids=[1, 2, 3]), sampling=greedy(2))
        return final.finish_reason in (pb.STOP, pb.LENGTH)

    def stop(self) -> None:
        self.channel.close()
        self.served.stop()


@pytest.fixture(scope="module")
def worker(model, tmp_path_factory):
    w = Worker(model, tmp_path_factory.mktemp("store"))
    yield w
    w.stop()


def greedy(max_tokens: int | None = None, **fields) -> pb.SamplingParams:
    params = pb.SamplingParams(temperature=0.0, **fields)
    if max_tokens is not None:
        params.max_tokens = max_tokens
    return params


def one_token(**fields) -> pb.SamplingParams:
    """Greedy, with no max_tokens, ending after one token."""
    return greedy(logit_bias={FORCED: 100.0}, stop_token_ids=[FORCED], **fields)


def user(text: str) -> pb.Messages:
    return pb.Messages(messages=[pb.ChatMessage(role="user", content=text)])


TOKENS = pb.TokenIds(ids=[1, 2, 3])
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def test_stop_strings_are_bounded_in_count_and_length(worker) -> None:
    too_long = greedy(2, stop=["x" * 8000])
    assert worker.code(ALICE, "Generate", token_ids=TOKENS, sampling=too_long) == INVALID
    assert worker.code(ALICE, "Generate", token_ids=TOKENS, sampling=greedy(2, stop=[f"s{i}" for i in range(17)])) \
        == INVALID
    assert worker.code(ALICE, "Generate", token_ids=TOKENS, sampling=greedy(2, stop_token_ids=range(1025))) == INVALID
    at_the_bounds = greedy(2, stop=[chr(0x4E00 + i) * 1024 for i in range(16)])
    assert worker.generate(ALICE, token_ids=TOKENS, sampling=at_the_bounds).finish_reason == pb.LENGTH
    assert worker.serves_bob()


def _peak_bytes(stops: tuple[str, ...], pieces: list[str]) -> int:
    tracemalloc.start()
    try:
        checker = StopChecker(SamplingParams(stop=stops), eos_token_ids=[1])
        for i, piece in enumerate(pieces):
            checker.update([5 + i], [piece])
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_stop_detection_costs_memory_linear_in_the_stop_strings() -> None:
    """The engine thread's cost of stop strings, measured deterministically: text that keeps a long stop-string
    prefix pending is the worst case. An 8,000-character stop string cost 33 MB (every proper prefix kept)."""
    long_stop = "a" * 7999 + "b"
    assert _peak_bytes((long_stop,), ["a" * 16] * 600) < 200_000
    widest = tuple(chr(0x4E00 + i) * 1023 + "b" for i in range(16))  # the bounds: 16 of 1,024 characters
    assert _peak_bytes(widest, [chr(0x4E00) * 16] * 80) < 400_000


def test_max_tokens_past_the_context_is_refused_and_ignore_eos_needs_it(worker) -> None:
    # the bound's arithmetic: 3 input tokens leave CONTEXT - 3 (a deadline keeps today's unbounded decode short)
    assert worker.generate(ALICE, token_ids=TOKENS, sampling=one_token(max_tokens=CONTEXT - 3)).finish_reason \
        == pb.STOP
    for max_tokens in (CONTEXT - 2, 2**31 - 1):
        assert worker.code(ALICE, "Generate", timeout=15, token_ids=TOKENS, sampling=greedy(max_tokens)) == \
            grpc.StatusCode.OUT_OF_RANGE
    assert worker.code(ALICE, "Generate", timeout=15, token_ids=TOKENS, sampling=greedy(ignore_eos=True)) == INVALID
    assert worker.serves_bob()


def test_a_session_decodes_up_to_the_context_and_no_further(worker) -> None:
    session = worker.stub.CreateSession(pb.CreateSessionRequest(system_prompt="s"), metadata=ALICE)
    no_eos = greedy(logit_bias={TINY.eos_token_id: -100.0})
    final = worker.generate(ALICE, timeout=60, session_id=session.session_id, messages=user("hi"), sampling=no_eos)
    assert final.finish_reason == pb.LENGTH
    # the last sampled token is owed to the next turn: with it the session holds exactly the context
    assert final.usage.session_tokens == CONTEXT - 1
    assert final.usage.completion_tokens == CONTEXT - session.tokens - final.usage.prefilled_tokens
    assert worker.code(ALICE, "Generate", session_id=session.session_id, messages=user("more"), sampling=greedy(1)) \
        == grpc.StatusCode.OUT_OF_RANGE
    assert worker.serves_bob()


def test_append_session_is_bounded_by_the_context_left(worker) -> None:
    session = worker.stub.CreateSession(pb.CreateSessionRequest(system_prompt="s"), metadata=ALICE)
    left = CONTEXT - session.tokens
    for count in (left, 1_000_000):  # the second is refused at its length, before a copy is made
        assert worker.code(ALICE, "AppendSession", session_id=session.session_id,
                           token_ids=pb.TokenIds(ids=[7] * count)) == grpc.StatusCode.OUT_OF_RANGE
    appended = worker.stub.AppendSession(pb.AppendSessionRequest(session_id=session.session_id,
                                                                 token_ids=pb.TokenIds(ids=[7] * (left - 1))),
                                         metadata=ALICE)
    assert appended.tokens == CONTEXT - 2  # the last appended token is owed to the reply
    assert worker.serves_bob()


def test_the_kv_reservation_is_the_real_remaining_need(worker) -> None:
    stats = worker.runtime.scheduler.stats

    def reserved(**fields) -> int:
        before = stats.reserved_tokens
        worker.generate(ALICE, **fields)
        return stats.reserved_tokens - before

    # without max_tokens: the whole context (the decode may grow that far), not input + a guess of 512
    assert reserved(token_ids=TOKENS, sampling=one_token()) == CONTEXT
    assert reserved(token_ids=TOKENS, sampling=one_token(max_tokens=2)) == 3 + 2
    assert reserved(token_ids=TOKENS, sampling=one_token(max_tokens=CONTEXT - 3)) == CONTEXT
    session = worker.stub.CreateSession(pb.CreateSessionRequest(system_prompt="s"), metadata=ALICE)
    assert reserved(session_id=session.session_id, token_ids=pb.TokenIds(ids=[5]), sampling=one_token()) == \
        CONTEXT - session.tokens


def _tools(*parameters: str) -> list[pb.Tool]:
    return [pb.Tool(name=f"t{i}", parameters_json=p) for i, p in enumerate(parameters)]


def _deep_call(arguments: str) -> pb.Messages:
    return pb.Messages(messages=[pb.ChatMessage(role="user", content="x"), pb.ChatMessage(
        role="assistant", tool_calls=[pb.ToolCall(id="c1", name="f", arguments_json=arguments)])])


@pytest.mark.parametrize("nesting", [DEEP, NESTED], ids=["past-the-parser", "past-the-setting"])
def test_deep_json_is_invalid_argument_on_every_rpc_that_takes_it(worker, nesting) -> None:
    session = worker.stub.CreateSession(pb.CreateSessionRequest(), metadata=ALICE).session_id
    calls = [
        ("Generate", dict(messages=user("x"), tools=_tools(nesting), sampling=greedy(1))),
        ("Generate", dict(messages=user("x"), response_format=pb.ResponseFormat(json_schema=nesting),
                          sampling=greedy(1))),
        ("Generate", dict(messages=_deep_call(nesting), sampling=greedy(1))),
        ("CreateSession", dict(tools=_tools(nesting))),
        ("CreateSession", dict(response_format_json_schema=nesting)),
        ("AppendSession", dict(session_id=session, messages=_deep_call(nesting))),
        ("Tokenize", dict(messages=user("x"), tools=_tools(nesting))),
        ("Tokenize", dict(messages=_deep_call(nesting))),
    ]
    assert [worker.code(ALICE, method, **fields) for method, fields in calls] == [INVALID] * len(calls)
    assert worker.serves_bob()


def test_counts_of_messages_and_tools_and_schema_bytes_are_bounded(worker) -> None:
    many = pb.Messages(messages=[pb.ChatMessage(role="user", content="x")] * 10_001)
    assert worker.code(ALICE, "Tokenize", messages=many) == INVALID
    assert worker.code(ALICE, "Generate", messages=many, sampling=greedy(1)) == INVALID
    assert worker.code(ALICE, "CreateSession", tools=_tools(*["{}"] * 129)) == INVALID
    big_schema = json.dumps({"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(3000)}})
    assert worker.code(ALICE, "Generate", messages=user("x"), response_format=pb.ResponseFormat(json_schema=big_schema),
                       sampling=greedy(1)) == INVALID
    assert worker.code(ALICE, "CreateSession", tools=_tools(big_schema)) == INVALID
    assert worker.serves_bob()


def test_byte_bounds_are_settings(model, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DSV4_WORKER_MAX_INPUT_BYTES", "4096")
    monkeypatch.setenv("DSV4_WORKER_MAX_MESSAGES", "4")
    limits = InputLimits.from_settings(WorkerSettings())
    assert (limits.max_input_bytes, limits.max_messages, limits.max_stop_strings) == (4096, 4, 16)
    small = Worker(model, tmp_path / "store", input_limits=limits)
    try:
        session = small.stub.CreateSession(pb.CreateSessionRequest(), metadata=ALICE).session_id
        big = "word " * 1000
        assert small.code(ALICE, "Generate", messages=user(big), sampling=greedy(1)) == INVALID
        assert small.code(ALICE, "AppendSession", session_id=session, messages=user(big)) == INVALID
        assert small.code(ALICE, "CreateSession", system_prompt=big) == INVALID
        assert small.code(ALICE, "Tokenize", text=big) == INVALID
        assert small.code(ALICE, "Tokenize", messages=pb.Messages(messages=[pb.ChatMessage(role="user")] * 5)) == \
            INVALID
        assert small.stub.Tokenize(pb.TokenizeRequest(text="word " * 100), metadata=ALICE).ids
    finally:
        small.stop()


MALFORMED = {
    "tool parameters not an object": ("Tokenize", dict(messages=user("x"), tools=_tools('"x"'))),
    "tool required not a list": ("CreateSession", dict(tools=_tools('{"required": 5}'))),
    "tool required names not strings": ("CreateSession", dict(tools=_tools('{"required": [{"a": 1}]}'))),
    "tool name with markup": ("CreateSession", dict(tools=[pb.Tool(name='f">x', parameters_json="{}")])),
    "tool name too long": ("CreateSession", dict(tools=[pb.Tool(name="f" * 65)])),
    "two tools of one name": ("CreateSession", dict(tools=[pb.Tool(name="f"), pb.Tool(name="f")])),
    "tool call without a name": ("Generate", dict(messages=pb.Messages(messages=[
        pb.ChatMessage(role="user", content="x"), pb.ChatMessage(role="assistant", tool_calls=[pb.ToolCall(id="c")])]),
        sampling=greedy(1))),
    "tool message without tool_call_id": ("Generate", dict(messages=pb.Messages(messages=[
        pb.ChatMessage(role="user", content="x"), pb.ChatMessage(role="tool", content="r")]), sampling=greedy(1))),
    "negative commit_every": ("Generate", dict(token_ids=TOKENS, commit_every=-1, sampling=greedy(1))),
    "string json_schema": ("Generate", dict(messages=user("x"), response_format=pb.ResponseFormat(json_schema='"{}"'),
                                            sampling=greedy(1))),
    "tool_choice naming no tool": ("Generate", dict(messages=user("x"), tools=_tools("{}"),
                                                    tool_choice=pb.ToolChoice(function="g"), sampling=greedy(1))),
    "unknown role": ("Tokenize", dict(messages=pb.Messages(messages=[pb.ChatMessage(role="wizard")]))),
    "NaN temperature": ("Generate", dict(token_ids=TOKENS, sampling=pb.SamplingParams(temperature=float("nan")))),
    "logit_bias out of range": ("Generate", dict(token_ids=TOKENS, sampling=greedy(1, logit_bias={5: 1000.0}))),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_chat_input_is_invalid_argument(worker, case) -> None:
    method, fields = MALFORMED[case]
    assert worker.code(ALICE, method, **fields) == INVALID
