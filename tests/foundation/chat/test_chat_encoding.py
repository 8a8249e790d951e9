"""Exact prompt strings derived by hand from the official encoder's rules (not from our output)."""

from __future__ import annotations

import pytest
from chat_messages import MAX, TE, A, B, E, T, U, asst, user

from foundation.chat.encoding import render_prompt
from foundation.chat.errors import MessageFormatError, UnknownModeError

SIMPLE = [
    ("non-think", [user("hi")], B + U + "hi" + A + TE),
    ("think-high", [user("hi")], B + U + "hi" + A + T),
    ("think-max", [user("hi")], B + MAX + U + "hi" + A + T),
    (
        "think-max",
        [{"role": "system", "content": "S"}, user("hi")],
        B + MAX + "S" + U + "hi" + A + T,
    ),
    ("non-think", [{"role": "system", "content": "S"}, user("hi")], B + "S" + U + "hi" + A + TE),
    ("think-high", [user("日本語 😀 ü")], B + U + "日本語 😀 ü" + A + T),
    ("non-think", [user("hi"), asst("yo", reasoning="hidden")], B + U + "hi" + A + TE + "yo" + E),
    (
        "think-high",
        [user("hi"), asst("yo", reasoning="r")],
        B + U + "hi" + A + T + "r" + TE + "yo" + E,
    ),
    ("think-high", [user("hi"), asst("yo")], B + U + "hi" + A + T + TE + "yo" + E),
    # Consecutive user messages merge into one turn joined by a blank line.
    ("non-think", [user("a"), user("b")], B + U + "a\n\nb" + A + TE),
    # Content given as text blocks.
    (
        "non-think",
        [user([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])],
        B + U + "ab" + A + TE,
    ),
    ("non-think", [{"role": "system", "content": None}, user("x")], B + U + "x" + A + TE),
]


@pytest.mark.parametrize(("mode", "messages", "expected"), SIMPLE)
def test_simple(mode, messages, expected):
    assert render_prompt(messages, mode) == expected


def test_multi_turn_without_tools_drops_earlier_reasoning():
    msgs = [user("q1"), asst("a1", "r1"), user("q2"), asst("a2", "r2"), user("q3")]
    assert render_prompt(msgs, "think-high") == (
        B + U + "q1" + A + TE + "a1" + E + U + "q2" + A + TE + "a2" + E + U + "q3" + A + T
    )
    assert render_prompt(msgs, "think-high", keep_thinking=True) == (
        B
        + U
        + "q1"
        + A
        + T
        + "r1"
        + TE
        + "a1"
        + E
        + U
        + "q2"
        + A
        + T
        + "r2"
        + TE
        + "a2"
        + E
        + U
        + "q3"
        + A
        + T
    )
    assert render_prompt(msgs, "non-think") == (
        B + U + "q1" + A + TE + "a1" + E + U + "q2" + A + TE + "a2" + E + U + "q3" + A + TE
    )
    assert render_prompt(msgs, "non-think", keep_thinking=True) == render_prompt(msgs, "non-think")


def test_drop_thinking_removes_earlier_developer_messages():
    msgs = [{"role": "developer", "content": "dev"}, user("a"), asst("ans", "r"), user("b")]
    assert render_prompt(msgs, "think-high") == B + U + "a" + A + TE + "ans" + E + U + "b" + A + T
    assert render_prompt(msgs, "non-think") == (
        B + U + "dev" + U + "a" + A + TE + "ans" + E + U + "b" + A + TE
    )


@pytest.mark.parametrize(("mode", "opener"), [("non-think", TE), ("think-high", T)])
def test_action_task(mode, opener):
    msgs = [user("find hot springs", task="action")]
    assert render_prompt(msgs, mode) == B + U + "find hot springs" + A + opener + "<｜action｜>"
    msgs.append(asst("Search", reasoning="never shown"))
    assert (
        render_prompt(msgs, mode)
        == B + U + "find hot springs" + A + opener + "<｜action｜>Search" + E
    )


def test_non_action_task_has_no_assistant_token():
    msgs = [user("a long question", task="title"), asst("Short title", reasoning="x")]
    assert render_prompt(msgs, "think-high") == B + U + "a long question<｜title｜>Short title" + E


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([{"role": "robot", "content": "x"}], "unknown role"),
        (
            [
                {
                    "role": "user",
                    "content": "x",
                    "tools": [{"type": "function", "function": {"name": "f"}}],
                }
            ],
            "tools belong",
        ),
        ([{"role": "user", "content": "x", "task": "dance"}], "unknown task"),
        ([{"role": "developer", "content": ""}], "developer"),
        ([{"role": "user", "content": 42}], "content must be"),
        ([{"role": "user", "content": [{"type": "image_url"}]}], "unsupported content block"),
        (
            [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "tool_calls": [{"function": {"name": "f", "arguments": "[1, 2]"}}],
                },
            ],
            "JSON object",
        ),
        (
            [
                {"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [{"function": {}}]},
            ],
            "function name",
        ),
        ("not a list", "list"),
    ],
)
def test_bad_messages_raise(messages, match):
    with pytest.raises(MessageFormatError, match=match):
        render_prompt(messages, "non-think")


def test_bad_mode_raises():
    with pytest.raises(UnknownModeError):
        render_prompt([user("x")], "think-ultra")
    assert issubclass(UnknownModeError, ValueError)
