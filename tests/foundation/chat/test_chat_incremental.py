"""Append-only session rendering: head + appended pieces equal the full keep-thinking render."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from foundation.chat.encoding import render_prompt
from foundation.chat.errors import MessageFormatError, SessionStateError
from foundation.chat.incremental import ChatSession, SessionHead, render_session
from foundation.chat.tokenizer import load_tokenizer

B, E = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
U, A, T, TE = "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>"
D = "｜DSML｜"
TOOLS = (
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {
        "type": "function",
        "function": {"name": "search", "description": "搜索", "parameters": {"type": "object"}},
    },
)


def completion_text(msg: dict, thinking: bool) -> str:
    """What a model writes for `msg` after the generation prefix (hand-written canonical DSML)."""
    text = (msg.get("reasoning_content") or "") + TE if thinking else ""
    text += msg.get("content") or ""
    if msg.get("tool_calls"):
        invokes = []
        for tc in msg["tool_calls"]:
            params = [
                f'<{D}parameter name="{k}" string="{"true" if isinstance(v, str) else "false"}">'
                f"{v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}</{D}parameter>"
                for k, v in json.loads(tc["function"]["arguments"]).items()
            ]
            invokes.append(
                f'<{D}invoke name="{tc["function"]["name"]}">\n'
                + "\n".join(params)
                + f"\n</{D}invoke>"
            )
        text += f"\n\n<{D}tool_calls>\n" + "\n".join(invokes) + f"\n</{D}tool_calls>"
    return text


def test_explicit_session_with_mode_switch_and_tools():
    head = SessionHead(system_prompt="S")
    session = ChatSession(head)
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    reply1 = {"role": "assistant", "reasoning_content": "r1", "content": "", "tool_calls": [call]}
    pieces = [
        session.head_piece.text,
        session.render_turn([{"role": "user", "content": "q1"}], "think-high").text,
    ]
    completion = completion_text(reply1, thinking=True)
    ids = load_tokenizer().encode(completion)
    pieces += [completion, session.append_completion(ids, tool_call_ids=["c1"]).text]
    pieces.append(
        session.render_turn(
            [{"role": "tool", "tool_call_id": "c1", "content": "R"}], "non-think"
        ).text
    )
    pieces.append(
        session.append_assistant(
            {"role": "assistant", "reasoning_content": "hidden", "content": "done"}
        ).text
    )
    pieces.append(session.render_turn([{"role": "user", "content": "q2"}], "think-high").text)
    expected = (
        B + "S" + U + "q1" + A + T + "r1" + TE + f'\n\n<{D}tool_calls>\n<{D}invoke name="f">\n'
        f'<{D}parameter name="x" string="false">1</{D}parameter>\n</{D}invoke>\n</{D}tool_calls>'
        + E
        + U
        + "<tool_result>R</tool_result>"
        + A
        + TE
        + "done"
        + E
        + U
        + "q2"
        + A
        + T
    )
    assert "".join(pieces) == expected
    assert session.token_ids == load_tokenizer().encode(expected)


def test_think_max_head_and_completion_ending_in_eos():
    session = ChatSession(SessionHead(think_max=True))
    assert session.head_piece.text.startswith(B + "Reasoning Effort: Absolute maximum")
    session.render_turn([{"role": "user", "content": "hi"}], "think-max")
    tok = load_tokenizer()
    closing = session.append_completion(tok.encode("r" + TE + "hello" + E))
    assert closing.text == "" and closing.token_ids == []
    piece = session.render_turn([{"role": "user", "content": "again"}], "non-think")
    assert piece.text == U + "again" + A + TE


def test_session_state_errors():
    session = ChatSession(SessionHead())
    with pytest.raises(SessionStateError):
        session.append_completion([5])
    with pytest.raises(SessionStateError, match="think_max"):
        session.render_turn([{"role": "user", "content": "x"}], "think-max")
    with pytest.raises(MessageFormatError):
        session.render_turn(
            [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}], "non-think"
        )
    with pytest.raises(MessageFormatError):
        session.render_turn(
            [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "non-think"
        )
    with pytest.raises(MessageFormatError):
        session.render_turn([], "non-think")
    session.render_turn([{"role": "user", "content": "x"}], "non-think")
    assert session.awaiting_reply
    with pytest.raises(SessionStateError):
        session.render_turn([{"role": "user", "content": "y"}], "non-think")
    with pytest.raises(SessionStateError, match="tool_call_ids"):
        session.append_completion(load_tokenizer().encode("plain"), tool_call_ids=["c"])


# ---- property tests -------------------------------------------------------------------------

_text = st.text(alphabet=st.sampled_from(list('ab c\n😀é中<>{}"')), min_size=0, max_size=12)
_value = st.one_of(
    _text,
    st.integers(-5, 99),
    st.booleans(),
    st.none(),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.sampled_from(["k", "ü"]), st.integers(0, 3), max_size=2),
)


@st.composite
def _reply(draw, turn_index: int, thinking: bool, after_task: bool) -> dict:
    msg: dict = {"role": "assistant", "content": draw(_text)}
    if thinking and not after_task:
        msg["reasoning_content"] = draw(_text)
    if not after_task and draw(st.booleans()):
        calls = []
        for i in range(draw(st.integers(1, 3))):
            args = draw(
                st.dictionaries(st.sampled_from(["q", "n", "opts", "城市"]), _value, max_size=3)
            )
            calls.append(
                {
                    "id": f"t{turn_index}_{i}",
                    "type": "function",
                    "function": {
                        "name": draw(st.sampled_from(["get_weather", "search"])),
                        "arguments": json.dumps(args, ensure_ascii=False),
                    },
                }
            )
        msg["tool_calls"] = calls
    return msg


@st.composite
def _session(draw):
    think_max = draw(st.booleans())
    head = SessionHead(
        think_max=think_max,
        system_prompt=draw(st.one_of(st.none(), _text)),
        tools=TOOLS if draw(st.booleans()) else (),
        response_format=draw(st.sampled_from([None, {"type": "json_object"}])),
    )
    modes = ["non-think", "think-high"] + (["think-max"] if think_max else [])
    turns, prev_calls = [], []
    for turn_index in range(draw(st.integers(1, 4))):
        mode = draw(st.sampled_from(modes))
        new: list[dict] = []
        if prev_calls:
            order = draw(st.permutations(prev_calls))
            new += [
                {"role": "tool", "tool_call_id": c["id"], "content": draw(_text)} for c in order
            ]
        if not new and draw(st.integers(0, 3)) == 0:
            # Client-supplied history inside one turn: an earlier exchange, possibly a task one.
            task = {"task": "action"} if draw(st.booleans()) else {}
            new += [
                {"role": "user", "content": draw(_text), **task},
                draw(_reply(turn_index, mode != "non-think", bool(task))),
            ]
            new[-1].pop("tool_calls", None)
        if not new or new[-1]["role"] == "assistant" or draw(st.booleans()):
            if draw(st.integers(0, 5)) == 0:
                new.append({"role": "latest_reminder", "content": draw(_text)})
            user = {"role": "user", "content": draw(_text)}
            # Official quirk: a user message merged into a tool-result turn loses its task.
            if not prev_calls and draw(st.integers(0, 6)) == 0:
                user["task"] = "action"
            new.append(user)
        after_task = "task" in new[-1]
        reply = draw(_reply(turn_index, mode != "non-think", after_task))
        generated = draw(st.booleans())
        prev_calls = reply.get("tool_calls", [])
        turns.append((new, mode, reply, generated))
    # Sometimes leave the last turn open, awaiting its reply.
    open_last = draw(st.booleans())
    return head, turns, open_last


def _run_session(head, turns, open_last):
    tok = load_tokenizer()
    session = ChatSession(head)
    text, ids = [session.head_piece.text], list(session.head_piece.token_ids)
    reference_turns = []
    for i, (new, mode, reply, generated) in enumerate(turns):
        piece = session.render_turn(new, mode)
        text.append(piece.text)
        ids += piece.token_ids
        if open_last and i == len(turns) - 1:
            reference_turns.append((new, mode))
            break
        reference_turns.append(([*new, reply], mode))
        if generated:
            completion = completion_text(reply, mode != "non-think" and "task" not in new[-1])
            gen_ids = tok.encode(completion)
            closing = session.append_completion(
                gen_ids, tool_call_ids=[c["id"] for c in reply.get("tool_calls", [])]
            )
            text += [completion, closing.text]
            ids += gen_ids + closing.token_ids
        else:
            piece = session.append_assistant(reply)
            text.append(piece.text)
            ids += piece.token_ids
    assert ids == session.token_ids
    return "".join(text), ids, reference_turns


_SETTINGS = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@_SETTINGS
@given(_session())
def test_appended_pieces_equal_full_render(case):
    head, turns, open_last = case
    text, ids, reference_turns = _run_session(head, turns, open_last)
    assert text == render_session(head, reference_turns)
    assert ids == load_tokenizer().encode(text)


@_SETTINGS
@given(_session())
def test_single_mode_session_equals_keep_thinking_render(case):
    head, turns, open_last = case
    mode = turns[0][1]
    if mode == "non-think" and head.think_max:
        mode = "think-high"  # a Think Max head needs thinking turns to match the one-shot encoder
    turns = [(new, mode, reply, generated) for new, _, reply, generated in turns]
    text, _, reference_turns = _run_session(head, turns, open_last)
    messages = [m for new, _ in reference_turns for m in new]
    system = {
        "role": "system",
        "content": head.system_prompt or "",
        "tools": list(head.tools),
        "response_format": head.response_format,
    }
    if head.system_prompt is not None or head.tools or head.response_format:
        messages.insert(0, system)
    one_shot_mode = "think-max" if head.think_max else mode
    assert text == render_prompt(messages, one_shot_mode, keep_thinking=True)
