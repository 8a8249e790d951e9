"""Completion parsing: one-shot results, malformed DSML errors, streaming at every split point."""

from __future__ import annotations

import random

import pytest

from foundation.chat.encoding import render_prompt
from foundation.chat.errors import DSMLParseError
from foundation.chat.parsing import (
    ContentDelta,
    ReasoningDelta,
    StreamingParser,
    ToolCallEvent,
    parse_completion,
)

E, TE, D = "<｜end▁of▁sentence｜>", "</think>", "｜DSML｜"


def p(name: str, value: str, is_str: bool = True) -> str:
    kind = "true" if is_str else "false"
    return f'<{D}parameter name="{name}" string="{kind}">{value}</{D}parameter>'


def inv(name: str, *params: str) -> str:
    return f'<{D}invoke name="{name}">\n' + "\n".join(params) + f"\n</{D}invoke>"


def blk(*invokes: str) -> str:
    return f"\n\n<{D}tool_calls>\n" + "\n".join(invokes) + f"\n</{D}tool_calls>"


WEATHER = blk(
    inv("get_weather", p("location", "Beijing"), p("days", "3", False)),
    inv("search", p("query", 'a <b> & "c"\nline2'), p("opts", '{"k": [1, 2.5, null]}', False)),
)
WEATHER_CALLS = [
    {"name": "get_weather", "arguments": {"location": "Beijing", "days": 3}},
    {"name": "search", "arguments": {"query": 'a <b> & "c"\nline2', "opts": {"k": [1, 2.5, None]}}},
]

# (mode, completion, expected parse)
CASES = [
    ("non-think", "Hello!" + E, {"reasoning_content": None, "content": "Hello!", "tool_calls": []}),
    ("non-think", "no eos", {"reasoning_content": None, "content": "no eos", "tool_calls": []}),
    (
        "think-high",
        "think 🤔" + TE + "答案 42\n\n" + E,
        {"reasoning_content": "think 🤔", "content": "答案 42\n\n", "tool_calls": []},
    ),
    (
        "think-max",
        "r" + TE + "c" + WEATHER + E,
        {"reasoning_content": "r", "content": "c", "tool_calls": WEATHER_CALLS},
    ),
    (
        "think-high",
        TE + WEATHER,
        {"reasoning_content": "", "content": "", "tool_calls": WEATHER_CALLS},
    ),
    (
        "non-think",
        WEATHER + E,
        {"reasoning_content": None, "content": "", "tool_calls": WEATHER_CALLS},
    ),
    (
        "non-think",
        blk(inv("ping", "")) + E,
        {
            "reasoning_content": None,
            "content": "",
            "tool_calls": [{"name": "ping", "arguments": {}}],
        },
    ),
    (
        "non-think",
        f"\n\n<{D}tool_calls>\n</{D}tool_calls>" + E,
        {"reasoning_content": None, "content": "", "tool_calls": []},
    ),
    # Cut off while reasoning (max tokens, or EOS without </think>): reasoning so far, no content.
    (
        "think-high",
        "still thinking <thi",
        {"reasoning_content": "still thinking <thi", "content": "", "tool_calls": []},
    ),
    (
        "think-high",
        "stopped" + E,
        {"reasoning_content": "stopped", "content": "", "tool_calls": []},
    ),
    # Look-alikes of markers are plain text.
    (
        "non-think",
        "a\n\nb <tool_calls> </thinker> \n\n<x",
        {
            "reasoning_content": None,
            "content": "a\n\nb <tool_calls> </thinker> \n\n<x",
            "tool_calls": [],
        },
    ),
]


@pytest.mark.parametrize(("mode", "text", "expected"), CASES)
def test_parse(mode, text, expected):
    assert parse_completion(text, mode).to_dict() == expected


def test_saw_eos():
    assert parse_completion("x" + E, "non-think").saw_eos
    assert not parse_completion("x", "non-think").saw_eos


def test_round_trip_with_encoder():
    # The assistant turn the encoder renders is what the model is trained to emit.
    args = {"path": "/tmp/ü.txt", "n": 2, "flags": [True, False], "cfg": {"a": None}}
    msg = {
        "role": "assistant",
        "reasoning_content": "plan",
        "content": "ok",
        "tool_calls": [{"type": "function", "function": {"name": "write", "arguments": args}}],
    }
    prompt = render_prompt([{"role": "user", "content": "go"}, msg], "think-high")
    completion = prompt.split("<｜Assistant｜><think>", 1)[1]
    assert parse_completion(completion, "think-high").to_dict() == {
        "reasoning_content": "plan",
        "content": "ok",
        "tool_calls": [{"name": "write", "arguments": args}],
    }


BAD = [
    ("non-think", f'hi <{D}invoke name="x">', "unexpected"),
    ("non-think", f"hi\n<{D}tool_calls>", "unexpected"),
    ("think-high", "r" + WEATHER, "unexpected"),
    ("think-high", "r<think>", "unexpected"),
    ("non-think", "c</think>", "unexpected"),
    ("non-think", "c<｜begin▁of▁sentence｜>", "unexpected"),
    ("non-think", blk(inv("f", p("n", "{bad", False))), "not JSON"),
    ("non-think", blk(inv("f", p("a", "1"), p("a", "2"))), "duplicate"),
    ("non-think", blk(inv("f", p("a", "1")))[:-5], "unterminated"),
    ("non-think", blk(inv("f", p("a", "1"))) + "tail", "after the tool_calls"),
    ("non-think", "c" + E + "more", "after the end"),
    (
        "non-think",
        f'\n\n<{D}tool_calls>\n<{D}invoke name="f">\n'
        f'<{D}parameter name="a" string="true">v</{D}invoke>',
        "not closed",
    ),
    (
        "non-think",
        f'\n\n<{D}tool_calls><{D}invoke name="f">\n</{D}invoke>\n</{D}tool_calls>',
        "expected",
    ),
    (
        "non-think",
        f'\n\n<{D}tool_calls>\n<{D}invoke name="f">\n'
        f'<{D}parameter name="a" string="maybe">v</{D}parameter>\n</{D}invoke>',
        "expected",
    ),
    (
        "non-think",
        f'\n\n<{D}tool_calls>\n<{D}invoke name="">\n</{D}invoke>\n</{D}tool_calls>',
        "tool name",
    ),
]


@pytest.mark.parametrize(("mode", "text", "match"), BAD)
def test_malformed_raises(mode, text, match):
    with pytest.raises(DSMLParseError, match=match):
        parse_completion(text, mode)


def _stream(mode: str, pieces: list[str]):
    parser = StreamingParser(mode)
    events = []
    for piece in pieces:
        events.extend(parser.feed(piece))
    events.extend(parser.finish())
    return parser, events


def _check_events(mode: str, text: str, events) -> None:
    expected = parse_completion(text, mode)
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    content = "".join(e.text for e in events if isinstance(e, ContentDelta))
    calls = [
        {"name": e.name, "arguments": e.arguments} for e in events if isinstance(e, ToolCallEvent)
    ]
    assert reasoning == (expected.reasoning_content or "")
    assert content == expected.content
    assert calls == [tc.to_dict() for tc in expected.tool_calls]
    assert [e.index for e in events if isinstance(e, ToolCallEvent)] == list(range(len(calls)))
    for e in events:
        if isinstance(e, (ReasoningDelta, ContentDelta)):
            assert e.text and D not in e.text and "<｜end" not in e.text and TE not in e.text


@pytest.mark.parametrize(("mode", "text"), [(m, t) for m, t, _ in CASES])
def test_stream_every_split_point(mode, text):
    for k in range(len(text) + 1):
        parser, events = _stream(mode, [text[:k], text[k:]])
        _check_events(mode, text, events)
        assert parser.result == parse_completion(text, mode)


@pytest.mark.parametrize(("mode", "text"), [(m, t) for m, t, _ in CASES])
def test_stream_char_by_char_and_random_chunks(mode, text):
    _check_events(mode, text, _stream(mode, list(text))[1])
    rng = random.Random(len(text))
    for _ in range(20):
        cuts = sorted(rng.sample(range(len(text) + 1), min(4, len(text) + 1)))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        _check_events(mode, text, _stream(mode, pieces)[1])


def test_tool_call_event_fires_when_invoke_closes():
    text = "c" + WEATHER + E
    first_close = text.index(f"</{D}invoke>") + len(f"</{D}invoke>")
    parser = StreamingParser("non-think")
    events = parser.feed(text[: first_close - 1])
    assert not any(isinstance(e, ToolCallEvent) for e in events)
    events = parser.feed(text[first_close - 1 : first_close])
    assert [e.name for e in events if isinstance(e, ToolCallEvent)] == ["get_weather"]


def test_content_before_a_split_marker_is_held_back_not_lost():
    parser = StreamingParser("non-think")
    assert parser.feed("Hello\n\n<") == [ContentDelta("Hello")]
    assert parser.feed(D) == []  # could still become the tool-call block
    with pytest.raises(DSMLParseError) as err:
        parser.finish()
    assert err.value.unparsed_text == "\n\n<" + D
    parser = StreamingParser("non-think")
    assert parser.feed("Hello\n\n<") == [ContentDelta("Hello")]
    assert parser.finish() == [ContentDelta("\n\n<")]


@pytest.mark.parametrize(("mode", "text", "match"), BAD)
def test_stream_errors_keep_all_text(mode, text, match):
    for k in range(0, len(text) + 1, 3):
        parser = StreamingParser(mode)
        events, err, fed = [], None, ""
        try:
            for piece in (text[:k], text[k:]):
                fed += piece
                events.extend(parser.feed(piece))
            events.extend(parser.finish())
        except DSMLParseError as exc:
            err = exc
        assert err is not None and match in str(err)
        unparsed = err.unparsed_text
        assert unparsed and fed.endswith(unparsed)
        # Everything before the unparsed tail was emitted as text, or is consumed markup.
        emitted = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
        if mode != "non-think" and fed.startswith(emitted + TE):
            emitted += TE
        emitted += "".join(e.text for e in events if isinstance(e, ContentDelta))
        before = fed[: len(fed) - len(unparsed)]
        assert before.startswith(emitted)
        consumed = before[len(emitted) :]
        assert consumed in ("", E) or (
            consumed.startswith(f"\n\n<{D}tool_calls") and consumed.endswith(f"</{D}tool_calls>")
        )
        # A failed parser stays failed and keeps collecting text.
        with pytest.raises(DSMLParseError) as again:
            parser.feed("more")
        assert again.value.unparsed_text == unparsed + "more"
