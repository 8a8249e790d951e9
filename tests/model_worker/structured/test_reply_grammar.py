"""Reply grammars against the official DSML rendering and against random walks: whatever a model samples inside the
mask parses as DSML and validates against the tool's schema (or the response format)."""

from __future__ import annotations

import json
import random

import jsonschema
import pytest
import torch

from foundation.chat import load_tokenizer
from foundation.chat.dsml import render_tool_calls
from foundation.chat.parsing import parse_completion
from foundation.chat.protocol import DSML_ID, EOS, EOS_ID, THINK_END, THINK_END_ID, ChatMode
from model_worker.structured import GrammarCompiler, ReplySpec, UnsupportedSchema
from model_worker.structured.reply_grammar import reply_grammar

WEATHER = {"name": "get_weather", "parameters": {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Paris", "Rome", "Zürich"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
        "unit": {"type": "string", "maxLength": 6, "pattern": "^[a-z]+$"},
        "detailed": {"type": "boolean"},
        "hours": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 23}, "maxItems": 3},
        "where": {"$ref": "#/$defs/point"},
    },
    "required": ["city", "days"],
    "$defs": {"point": {"type": "object", "properties": {"lat": {"type": "integer", "minimum": -90, "maximum": 90}},
                        "required": ["lat"], "additionalProperties": False}},
}}
NOTE = {"name": "note", "parameters": {"type": "object", "properties": {
    "text": {"type": "string", "maxLength": 12}, "tag": {"const": "todo"}}, "required": ["text", "tag"]}}
LOOSE = {"name": "loose", "parameters": {"type": "object", "required": ["id"]}}  # any value, but present
ANSWER = {"type": "object", "properties": {"verdict": {"enum": ["yes", "no"]},
                                           "score": {"type": "integer", "minimum": 0, "maximum": 100},
                                           "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}},
          "required": ["verdict", "score"], "additionalProperties": False}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def grammars(tokenizer):
    return GrammarCompiler(tokenizer, 129_280, EOS_ID)


def feed(constraint, token_ids: list[int]) -> None:
    for token_id in token_ids:
        assert constraint.allowed()[token_id], f"token {token_id} is masked"
        constraint.accept(token_id)


def official_reply(tokenizer, calls, content: str = "", reasoning: str | None = None) -> list[int]:
    text = (f"{reasoning}{THINK_END}" if reasoning is not None else "") + content
    return tokenizer.encode(text + "\n\n" + render_tool_calls(calls) + EOS)


@pytest.mark.parametrize("thinking", [False, True])
def test_the_official_rendering_of_calls_is_accepted(grammars, tokenizer, thinking):
    calls = [("get_weather", {"city": "Zürich", "days": 3, "unit": "c", "hours": [1, 23], "where": {"lat": -4}}),
             ("note", {"text": "a </b> c", "tag": "todo"}),
             ("loose", {"id": {"deep": [1, "x"]}}), ("loose", {"id": "raw </ text"}),
             ("get_weather", {"city": "Rome", "days": 14})]
    constraint = grammars.constraint(ReplySpec(thinking=thinking, tools=[WEATHER, NOTE, LOOSE]))
    feed(constraint, official_reply(tokenizer, calls, "Checking.", "hm" if thinking else None))
    assert constraint.done


def test_required_and_named_calls_start_at_once(grammars, tokenizer):
    required = grammars.constraint(ReplySpec(tools=[WEATHER, NOTE], tool_choice="required"))
    assert not required.allowed()[tokenizer.encode("Sure")[0]]
    feed(required, official_reply(tokenizer, [("note", {"text": "x", "tag": "todo"})]))
    named = grammars.constraint(ReplySpec(tools=[WEATHER, NOTE], tool_choice="note"))
    prefix = tokenizer.encode('\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="')
    feed(named, prefix)
    assert not named.allowed()[tokenizer.encode("get")[0]]  # only "note" may be called


def test_none_rules_out_the_tool_block_and_special_tokens(grammars, tokenizer):
    constraint = grammars.constraint(ReplySpec(thinking=True, tools=[WEATHER], tool_choice="none"))
    assert constraint.allowed()[THINK_END_ID]
    feed(constraint, tokenizer.encode("thinking</think>The answer\n\n<"))
    allowed = constraint.allowed()
    assert not allowed[DSML_ID] and not allowed[THINK_END_ID] and allowed[EOS_ID]


def random_walk(constraint, rng: random.Random, limit: int = 400) -> list[int]:
    """Sample uniformly among the allowed tokens until EOS: the worst case of an untrained model."""
    out: list[int] = []
    while len(out) < limit:
        allowed = torch.nonzero(constraint.allowed()).flatten().tolist()
        token = rng.choice(allowed)
        constraint.accept(token)
        out.append(token)
        if token == EOS_ID:
            return out
    raise AssertionError(f"no EOS within {limit} tokens")


@pytest.mark.parametrize("choice", ["required", "get_weather", "note"])
def test_random_calls_parse_and_validate(grammars, tokenizer, choice):
    schemas = {t["name"]: t["parameters"] for t in (WEATHER, NOTE)}
    rng = random.Random(7)
    for _ in range(8):
        tokens = random_walk(grammars.constraint(ReplySpec(tools=[WEATHER, NOTE], tool_choice=choice)), rng)
        parsed = parse_completion(tokenizer.decode(tokens), ChatMode.NON_THINK)
        assert parsed.content == "" and parsed.tool_calls
        for call in parsed.tool_calls:
            assert choice == "required" or call.name == choice
            jsonschema.validate(call.arguments, schemas[call.name])


def test_a_tool_without_arguments_is_called_with_none(grammars, tokenizer):
    """`properties: {}` (how LangChain and OpenAI write a tool that takes no arguments) or `additionalProperties:
    false` alone: the call is its name alone, never made-up parameters."""
    for parameters in ({"type": "object", "properties": {}}, {"type": "object", "additionalProperties": False}):
        ping = {"name": "ping", "parameters": parameters}
        rng = random.Random(3)
        for _ in range(4):
            tokens = random_walk(grammars.constraint(ReplySpec(tools=[ping], tool_choice="ping")), rng)
            [call] = parse_completion(tokenizer.decode(tokens), ChatMode.NON_THINK).tool_calls
            assert (call.name, call.arguments) == ("ping", {})


def test_parallel_calls_off_allows_one_call(grammars, tokenizer):
    rng = random.Random(5)
    counts = set()
    for _ in range(8):
        spec = ReplySpec(tools=[WEATHER, NOTE], tool_choice="required", one_call=True)
        parsed = parse_completion(tokenizer.decode(random_walk(grammars.constraint(spec), rng)), ChatMode.NON_THINK)
        counts.add(len(parsed.tool_calls))
    assert counts == {1}
    assert "+" not in reply_grammar(ReplySpec(tools=[WEATHER], one_call=True)).split("tool_block:")[1].splitlines()[0]


def test_random_answers_match_the_response_format(grammars, tokenizer):
    rng = random.Random(11)
    for _ in range(8):
        tokens = random_walk(grammars.constraint(ReplySpec(response_format=ANSWER)), rng)
        jsonschema.validate(json.loads(tokenizer.decode(tokens[:-1])), ANSWER)


def test_a_response_format_may_give_way_to_calls(grammars, tokenizer):
    constraint = grammars.constraint(ReplySpec(thinking=True, tools=[NOTE], response_format=ANSWER))
    feed(constraint, official_reply(tokenizer, [("note", {"text": "x", "tag": "todo"})], "", "plan"))
    other = grammars.constraint(ReplySpec(tools=[NOTE], response_format=ANSWER))
    feed(other, tokenizer.encode('{"verdict": "no", "score": 7}' + EOS))


@pytest.mark.parametrize("spec, message", [
    (ReplySpec(tool_choice="required"), "needs at least one tool"),
    (ReplySpec(tools=[NOTE], tool_choice="missing"), "no tool named"),
    (ReplySpec(tools=[{"name": "f", "parameters": {"type": "array"}}]), "object schema"),
    (ReplySpec(tools=[{"name": "f", "parameters": {"properties": {"x": {"type": "string", "maxLength": -1}}}}]),
     "minLength/maxLength"),
    (ReplySpec(response_format={"type": "string", "format": "no-such-format"}), "cannot enforce"),
])
def test_what_cannot_be_enforced_is_refused(grammars, spec, message):
    with pytest.raises(UnsupportedSchema, match=message):
        grammars.constraint(spec)


def test_free_text_is_not_constrained_and_grammars_are_cached(grammars):
    assert grammars.constraint(ReplySpec(thinking=True)) is None
    spec = ReplySpec(tools=[NOTE])
    first, second = grammars.constraint(spec), grammars.constraint(spec)
    assert first is not second and len(grammars._cache) >= 1
