"""The four official golden pairs: exact prompt text and its token ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from foundation.chat.cli import load_messages
from foundation.chat.encoding import encode_prompt, render_prompt
from foundation.chat.tokenizer import load_tokenizer

GOLDEN = Path(__file__).parent / "golden"
# Cases 1-3 were encoded in thinking mode (Think High), case 4 in chat mode (see golden/README.md).
CASES = [(1, "think-high"), (2, "think-high"), (3, "think-high"), (4, "non-think")]


def _load(case: int) -> tuple[list, str]:
    messages = load_messages(
        json.loads((GOLDEN / f"official_input_{case}.json").read_text(encoding="utf-8"))
    )
    with open(GOLDEN / f"official_output_{case}.txt", encoding="utf-8", newline="") as f:
        return messages, f.read()


@pytest.mark.parametrize(("case", "mode"), CASES)
def test_golden_text(case, mode):
    messages, expected = _load(case)
    assert render_prompt(messages, mode) == expected


@pytest.mark.parametrize(("case", "mode"), CASES)
def test_golden_token_ids_round_trip(case, mode):
    messages, expected = _load(case)
    tok = load_tokenizer()
    ids = encode_prompt(messages, mode)
    assert ids == tok.encode(expected)
    assert ids[0] == 0 and ids[-1] == 1  # BOS ... EOS of the final assistant turn
    assert tok.decode(ids) == expected


def test_golden_2_keep_thinking_shows_earlier_reasoning():
    messages, expected = _load(2)
    kept = render_prompt(messages, "think-high", keep_thinking=True)
    assert kept == expected.replace(
        "<｜Assistant｜></think>Hi there!",
        "<｜Assistant｜><think>The user said hello, I should greet back.</think>Hi there!",
    )


def test_golden_1_tools_keep_reasoning_either_way():
    messages, expected = _load(1)
    assert render_prompt(messages, "think-high", keep_thinking=True) == expected
