"""tool_choice, response_format and logprobs through a real worker (`tiny`, random weights): whatever the untrained
model samples inside the grammar, a tool_calls finish carries calls that validate against their tools' schemas, and
a response format's content validates against its schema. Bounded schemas (enum, maxLength, ranges) make a random
model's replies end."""

from __future__ import annotations

import json

import grpc
import jsonschema
import pytest
from server_testlib import Worker, run, user

from protos.dsv4.worker.v1 import worker_pb2 as pb

LOOKUP = pb.Tool(name="lookup", description="Look a word up", parameters_json=json.dumps({
    "type": "object",
    "properties": {"word": {"type": "string", "maxLength": 8}, "lang": {"enum": ["en", "fr"]},
                   "limit": {"type": "integer", "minimum": 1, "maximum": 5}},
    "required": ["word", "lang"]}))
FLAG = pb.Tool(name="flag", parameters_json=json.dumps({
    "type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"]}))
VERDICT = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0,
                                                                              "maximum": 9}},
           "required": ["ok", "n"], "additionalProperties": False}
SCHEMAS = {t.name: json.loads(t.parameters_json) for t in (LOOKUP, FLAG)}


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    from model_worker.engine.loading import load_model

    w = Worker(load_model(None, "tiny", numerics="official"), tmp_path_factory.mktemp("structured"))
    yield w
    w.stop()


def sampled(seed: int, max_tokens: int = 120, **fields) -> pb.SamplingParams:
    return pb.SamplingParams(temperature=1.0, seed=seed, max_tokens=max_tokens, **fields)


def assert_valid_reply(final: pb.Final) -> None:
    """With tools and a response format, `auto` lets the model call a tool or answer in the format. Random weights
    may go on adding calls until max_tokens: every call made by then still matches its schema."""
    if final.tool_calls:
        assert_valid_calls(final, finish=(pb.TOOL_CALLS, pb.LENGTH))
    else:
        assert final.finish_reason == pb.STOP
        jsonschema.validate(json.loads(final.content), VERDICT)


def assert_valid_calls(final: pb.Final, names=SCHEMAS, finish=(pb.TOOL_CALLS,)) -> None:
    assert final.finish_reason in finish and final.tool_calls
    if final.finish_reason == pb.TOOL_CALLS:  # a block cut by max_tokens comes back as text
        assert final.content == ""
    for call in final.tool_calls:
        assert call.name in names
        jsonschema.validate(json.loads(call.arguments_json), SCHEMAS[call.name])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_required_and_named_tool_choice_yield_valid_calls(worker, seed):
    stub = worker.stub
    responses, final = run(stub, pb.GenerateRequest(messages=user("define cat"), tools=[LOOKUP, FLAG],
                                                    tool_choice=pb.ToolChoice(required=True), sampling=sampled(seed)))
    assert_valid_calls(final)
    streamed = [r.tool_call for r in responses if r.HasField("tool_call")]
    assert [c.name for c in streamed] == [c.name for c in final.tool_calls]
    _, final = run(stub, pb.GenerateRequest(messages=user("flag it"), tools=[LOOKUP, FLAG], mode=pb.THINK_HIGH,
                                            tool_choice=pb.ToolChoice(function="flag"),
                                            sampling=sampled(seed, max_tokens=400, logit_bias={128822: 30.0})))
    assert_valid_calls(final, names=["flag"])
    assert len(final.tool_calls) == 1


def test_tool_choice_none_and_response_format(worker):
    stub = worker.stub
    _, final = run(stub, pb.GenerateRequest(messages=user("hi"), tools=[LOOKUP],
                                            tool_choice=pb.ToolChoice(none=True), sampling=sampled(5, max_tokens=40)))
    assert final.finish_reason in (pb.STOP, pb.LENGTH) and not final.tool_calls
    for seed in (6, 7):
        _, final = run(stub, pb.GenerateRequest(messages=user("judge"), sampling=sampled(seed),
                                                response_format=pb.ResponseFormat(json_schema=json.dumps(VERDICT))))
        assert final.finish_reason == pb.STOP
        jsonschema.validate(json.loads(final.content), VERDICT)


def test_a_sessions_tools_and_response_format_hold_on_every_turn(worker):
    stub = worker.stub
    stub.CreateSession(pb.CreateSessionRequest(session_id="structured", tools=[LOOKUP],
                                               response_format_json_schema=json.dumps(VERDICT)))
    for seed in (8, 9, 10):
        _, final = run(stub, pb.GenerateRequest(session_id="structured", messages=user("judge"),
                                                sampling=sampled(seed)))
        assert_valid_reply(final)
    _, final = run(stub, pb.GenerateRequest(session_id="structured", messages=user("look up dog"),
                                            tool_choice=pb.ToolChoice(function="lookup"), sampling=sampled(11)))
    assert_valid_calls(final, names=["lookup"])
    tool_result = pb.Messages(messages=[pb.ChatMessage(role="tool", content="a dog",
                                                       tool_call_id=final.tool_calls[0].id)])
    _, final = run(stub, pb.GenerateRequest(session_id="structured", messages=tool_result, sampling=sampled(12)))
    assert final.usage.prefilled_tokens < 40  # the tool result only, not the history
    assert_valid_reply(final)


def test_unenforceable_requests_are_refused(worker):
    stub = worker.stub

    def code(call):
        with pytest.raises(grpc.RpcError) as raised:
            call()
        return raised.value.code()

    bad_tool = pb.Tool(name="f", parameters_json='{"type": "array"}')
    assert code(lambda: run(stub, pb.GenerateRequest(messages=user("x"), tools=[bad_tool]))) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert code(lambda: run(stub, pb.GenerateRequest(messages=user("x"), tools=[LOOKUP],
                                                     tool_choice=pb.ToolChoice(function="nope")))) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert code(lambda: stub.CreateSession(pb.CreateSessionRequest(response_format_json_schema="[1]"))) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert code(lambda: run(stub, pb.GenerateRequest(messages=user("x"), tools=[LOOKUP], sampling=pb.SamplingParams(
        ignore_eos=True, max_tokens=2)))) == grpc.StatusCode.INVALID_ARGUMENT


def test_logprobs_and_top_logprobs(worker):
    responses, final = run(worker.stub, pb.GenerateRequest(
        token_ids=pb.TokenIds(ids=[0, 100, 200]), sampling=pb.SamplingParams(temperature=0.0, max_tokens=6,
                                                                              top_logprobs=3)))
    logprobs = [lp for r in responses if r.HasField("delta") for lp in r.delta.logprobs]
    assert len(logprobs) == final.usage.completion_tokens
    for lp in logprobs:
        assert len(lp.top) == 3 and lp.top[0].token_id == lp.token_id  # greedy: the best is the one chosen
        assert lp.top[0].logprob >= lp.top[1].logprob >= lp.top[2].logprob
    responses, _ = run(worker.stub, pb.GenerateRequest(token_ids=pb.TokenIds(ids=[0, 100]),
                                                       sampling=pb.SamplingParams(max_tokens=3, seed=1)))
    assert not any(r.delta.logprobs for r in responses if r.HasField("delta"))


def test_a_speculative_worker_gives_the_same_replies_and_reports_its_drafts(tmp_path):
    from model_worker.engine.loading import load_model

    model = load_model(None, "tiny", numerics="official")
    plain, speculative = Worker(model, tmp_path / "plain"), Worker(model, tmp_path / "spec", speculative=True)
    try:
        for seed in (1, 2):
            request = pb.GenerateRequest(messages=user("count"), tools=[LOOKUP], sampling=sampled(seed, max_tokens=16))
            _, expected = run(plain.stub, request)
            _, final = run(speculative.stub, request)
            assert final.content == expected.content
            assert [(c.name, c.arguments_json) for c in final.tool_calls] == \
                [(c.name, c.arguments_json) for c in expected.tool_calls]
            assert final.usage.draft_tokens > 0 and 0 <= final.usage.accepted_draft_tokens <= final.usage.draft_tokens
    finally:
        plain.stop()
        speculative.stop()


def test_a_reply_cut_inside_a_tool_call_ends_with_length_not_an_error(worker):
    _, final = run(worker.stub, pb.GenerateRequest(messages=user("look"), tools=[LOOKUP],
                                                   tool_choice=pb.ToolChoice(required=True),
                                                   sampling=sampled(1, max_tokens=8)))
    assert final.finish_reason == pb.LENGTH and not final.tool_calls
    assert "tool_calls" in final.content  # the partial block is passed on as text, nothing lost


def test_a_worker_with_constrained_decoding_off_samples_the_models_own_reply(tmp_path):
    """What the trained model's evaluation measures: without the grammar, random weights asked for a tool call
    (tool_choice required) write no parseable call; the same request on a constrained worker always gets one."""
    from model_worker.engine.loading import load_model

    model = load_model(None, "tiny", numerics="official")
    free = Worker(model, tmp_path / "free", constrained_decoding=False)
    try:
        request = pb.GenerateRequest(messages=user("look"), tools=[LOOKUP], tool_choice=pb.ToolChoice(required=True),
                                     sampling=sampled(3, max_tokens=24))
        _, final = run(free.stub, request)
        assert final.finish_reason == pb.LENGTH and not final.tool_calls and final.content
    finally:
        free.stop()
