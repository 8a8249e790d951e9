"""Synthetic agent traces: every reply reads back through the platform's parser as the call or answer it stands
for, the loss covers exactly the replies, generation is deterministic, held-out phrasings and evaluation seeds never
reach the training data, and the calculator is exact."""

from __future__ import annotations

import json
import re

import pytest

from agent_runtime.tools.builtins import add_builtins
from agent_runtime.tools.calculator import calculate as runtime_calculate
from agent_runtime.tools.memory import KeyValueMemory
from agent_runtime.tools.registry import ToolRegistry
from foundation.chat import load_tokenizer, parse_completion
from services.embedded.demo import TRAINED
from training.data import FAMILIES, fingerprint, generate, held_out, render
from training.data.tools import CALCULATOR, RECALL, REMEMBER, calculate
from training.data.traces import (
    ASK_BOTH,
    ASK_CALC,
    ASK_JSON,
    ASK_NEEDLE,
    ASK_NO_TOOL,
    ASK_RECALL,
    ASK_STORE,
    EVAL_SEED_BASE,
    MODES,
    SYSTEM,
)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_reply_parses_back_and_only_replies_carry_the_loss(family: str, mode: str) -> None:
    tokenizer = load_tokenizer()
    rendered = render(generate(family, 7, mode=mode), tokenizer)
    trace = rendered.trace
    for text, calls, turn in zip(rendered.replies, trace.calls, trace.turns, strict=True):
        parsed = parse_completion(text, mode)
        assert [(c.name, c.arguments) for c in parsed.tool_calls] == calls
        assert parsed.content == turn.reply["content"] and parsed.saw_eos
        assert parsed.reasoning_content == turn.reply.get("reasoning_content")
    assert trace.answer in rendered.replies[-1]
    replies = [t for t, m in zip(rendered.token_ids, rendered.loss_mask, strict=True) if m]
    assert replies == [t for text in rendered.replies for t in tokenizer.encode(text)]
    if family == "json":
        assert set(json.loads(trace.answer)) == {"name", "age", "city"}


def test_generation_is_deterministic_and_seeds_differ() -> None:
    first = [render(generate(family, 3)).token_ids for family in FAMILIES]
    assert first == [render(generate(family, 3)).token_ids for family in FAMILIES]
    assert all(a != b for a, b in zip(first, [render(generate(family, 4)).token_ids for family in FAMILIES]))


def test_held_out_phrasings_and_evaluation_seeds_never_reach_training() -> None:
    phrasings = [re.compile(re.sub(r"\\\{\w\\\}", ".+", re.escape(template)))
                 for table in (ASK_CALC, ASK_STORE, ASK_RECALL, ASK_NEEDLE, ASK_JSON, ASK_NO_TOOL, ASK_BOTH)
                 for template in table["held_out"]]
    training = [render(generate(family, seed)) for family in FAMILIES for seed in range(20)]
    candidates = [render(generate(family, EVAL_SEED_BASE + seed, phrasing)) for family in FAMILIES
                  for seed in range(10) for phrasing in ("train", "held_out")]
    seen = {fingerprint(r.token_ids) for r in training}
    evaluation = held_out(candidates, seen)
    assert len(evaluation) < len(candidates)  # short families repeat: seeds alone would not keep the sets apart
    assert {r.trace.family for r in evaluation} == set(FAMILIES)
    users = [m["content"] for r in training for turn in r.trace.turns for m in turn.inputs if m["role"] == "user"]
    assert not [p for p in phrasings if any(p.search(text) for text in users)]
    held_out_users = [m["content"] for r in evaluation if r.trace.phrasing == "held_out" for turn in r.trace.turns
                      for m in turn.inputs if m["role"] == "user"]
    assert all(any(p.search(text) for p in phrasings) for text in held_out_users if not text.startswith("Keep these"))
    assert not {fingerprint(r.token_ids) for r in training} & {fingerprint(r.token_ids) for r in evaluation}


def test_needle_distance_grows_with_its_log_lines() -> None:
    short, long = (render(generate("needle", 1, needle_lines=n)) for n in (20, 200))
    assert len(long.token_ids) > 5 * len(short.token_ids) and long.trace.answer in long.replies[-1]


@pytest.mark.parametrize(("expression", "result"), [("(12 + 30) * 2", "84"), ("7 / 4", "1.75"),
                                                     ("1 / 3", "0.3333333333333333"), ("10 / 2", "5.0"),
                                                     ("5 - 9 * 2", "-13")])
def test_the_calculator_answers_as_the_agent_runtimes(expression: str, result: str) -> None:
    assert calculate(expression) == result == runtime_calculate(expression)


def test_the_traces_tools_are_the_agent_runtimes_builtins() -> None:
    """The model learns the tool block an agent session renders: the same names, descriptions and schemas, and the
    same results for every expression the data asks."""
    registry = add_builtins(ToolRegistry(), "ns", KeyValueMemory())
    for tool in (CALCULATOR, REMEMBER, RECALL):
        served = registry.get(tool["function"]["name"])
        assert (served.description, served.parameters) == (tool["function"]["description"],
                                                            tool["function"]["parameters"])
    for seed in range(300):
        for turn in generate("calculator", seed).turns:
            for call in turn.reply.get("tool_calls", ()):
                expression = json.loads(call["function"]["arguments"])["expression"]
                assert calculate(expression) == runtime_calculate(expression)


def test_the_demo_talks_to_the_trained_model_as_its_data_does() -> None:
    """The embedded demo's journeys for the trained model: its system prompt and tools, and questions in phrasings
    training used."""
    assert TRAINED.system_prompt == SYSTEM
    assert TRAINED.tools == tuple(tool["function"]["name"] for tool in (CALCULATOR, REMEMBER, RECALL))
    calculation, store = TRAINED.first_turns
    assert calculation == ASK_CALC["train"][0].format(e="128 * 37 + 9")
    assert store == ASK_STORE["train"][0].format(k="locker code", v="K-4821")
    assert TRAINED.resumed_turn == ASK_RECALL["train"][0].format(k="locker code")
