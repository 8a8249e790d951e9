"""Exact prompt strings for tools, DSML tool calls, tool results and response_format, derived by
hand from the official encoder's rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chat_messages import LR, MAX, TE, A, B, D, E, T, U, asst, tool, user

from foundation.chat.encoding import render_prompt
from foundation.chat.errors import MessageFormatError
from foundation.chat.messages import attach_tools

_GOLDEN_1 = (Path(__file__).parent / "golden" / "official_output_1.txt").read_text(encoding="utf-8")
TOOLS_HEAD = _GOLDEN_1[_GOLDEN_1.index("## Tools") : _GOLDEN_1.index('{"name": "get_weather"')]
TOOLS_TAIL = (
    "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke "
    "tool calls.\n"
)

TOOL_F = {
    "type": "function",
    "function": {"name": "f", "description": "d", "parameters": {"type": "object"}},
}
SCHEMA_F = '{"name": "f", "description": "d", "parameters": {"type": "object"}}'


def tools_block(*schemas: str) -> str:
    return TOOLS_HEAD + "\n".join(schemas) + TOOLS_TAIL


def call(name: str, args, call_id: str = "") -> dict:
    out = {"type": "function", "function": {"name": name, "arguments": args}}
    return {"id": call_id, **out} if call_id else out


def invoke(name: str, *params: str) -> str:
    return f'<{D}invoke name="{name}">\n' + "\n".join(params) + f"\n</{D}invoke>"


def param(name: str, value: str, is_str: bool = True) -> str:
    kind = "true" if is_str else "false"
    return f'<{D}parameter name="{name}" string="{kind}">{value}</{D}parameter>'


def block(*invokes: str) -> str:
    return f"\n\n<{D}tool_calls>\n" + "\n".join(invokes) + f"\n</{D}tool_calls>"


def test_multi_turn_with_tools_keeps_reasoning():
    msgs = [
        {"role": "system", "content": "S", "tools": [TOOL_F]},
        user("q1"),
        asst("a1", "r1"),
        user("q2"),
    ]
    expected = (
        B
        + "S\n\n"
        + tools_block(SCHEMA_F)
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
    )
    assert render_prompt(msgs, "think-high") == expected
    assert render_prompt(msgs, "think-max") == expected.replace(B, B + MAX, 1)


def test_string_and_non_string_parameters():
    args = {
        "s": "Beijing, 北京",
        "n": 3,
        "f": 1.5,
        "b": True,
        "z": None,
        "xs": [1, "a"],
        "o": {"k": "ü"},
    }
    msgs = [
        {"role": "system", "content": "", "tools": [TOOL_F]},
        user("go"),
        asst(calls=[call("f", json.dumps(args))]),
    ]
    expected_block = block(
        invoke(
            "f",
            param("s", "Beijing, 北京"),
            param("n", "3", False),
            param("f", "1.5", False),
            param("b", "true", False),
            param("z", "null", False),
            param("xs", '[1, "a"]', False),
            param("o", '{"k": "ü"}', False),
        )
    )
    expected = B + "\n\n" + tools_block(SCHEMA_F) + U + "go" + A + TE + expected_block + E
    assert render_prompt(msgs, "non-think") == expected
    # Arguments given as an object render the same as the JSON string.
    msgs[2] = asst(calls=[call("f", args)])
    assert render_prompt(msgs, "non-think") == expected


def test_undecodable_arguments_become_one_string_parameter():
    msgs = [user("go"), asst(calls=[call("f", "not json")])]
    assert render_prompt(msgs, "non-think") == (
        B + U + "go" + A + TE + block(invoke("f", param("arguments", "not json"))) + E
    )


def test_tool_call_without_arguments():
    msgs = [user("go"), asst(calls=[call("ping", "{}")])]
    assert render_prompt(msgs, "non-think") == B + U + "go" + A + TE + block(invoke("ping", "")) + E


def test_parallel_calls_results_sorted_by_call_order():
    msgs = [
        {"role": "system", "content": "S", "tools": [TOOL_F]},
        user("both"),
        asst("", "plan", [call("f", '{"x": 1}', "c1"), call("g", '{"y": "two"}', "c2")]),
        tool("R2", "c2"),
        tool("R1", "c1"),
    ]
    expected = (
        B
        + "S\n\n"
        + tools_block(SCHEMA_F)
        + U
        + "both"
        + A
        + T
        + "plan"
        + TE
        + block(invoke("f", param("x", "1", False)), invoke("g", param("y", "two")))
        + E
        + U
        + "<tool_result>R1</tool_result>\n\n<tool_result>R2</tool_result>"
        + A
        + T
    )
    assert render_prompt(msgs, "think-high") == expected


def test_unknown_result_ids_sort_first_and_stay_stable():
    msgs = [
        user("go"),
        asst(calls=[call("f", "{}", "a"), call("g", "{}", "b")]),
        tool("Rb", "b"),
        tool("R?", "zzz"),
        tool("Ra", "a"),
    ]
    out = render_prompt(msgs, "non-think")
    assert out.endswith(
        U + "<tool_result>R?</tool_result>\n\n<tool_result>Ra</tool_result>\n\n"
        "<tool_result>Rb</tool_result>" + A + TE
    )


def test_tool_results_and_following_user_text_share_a_turn():
    msgs = [user("go"), asst(calls=[call("f", "{}", "a")]), tool("R", "a"), user("and now?")]
    assert render_prompt(msgs, "non-think").endswith(
        U + "<tool_result>R</tool_result>\n\nand now?" + A + TE
    )


def test_tool_content_blocks_join_with_blank_line():
    msgs = [
        user("go"),
        asst(calls=[call("f", "{}")]),
        {
            "role": "tool",
            "content": [
                {"type": "text", "text": "p1"},
                {"type": "image"},
                {"type": "text", "text": "p2"},
            ],
        },
    ]
    assert render_prompt(msgs, "non-think").endswith(
        U + "<tool_result>p1\n\n[Unsupported image]\n\np2</tool_result>" + A + TE
    )


def test_response_format_on_system():
    rf = {"type": "json_schema", "json_schema": {"name": "ans", "schema": {"type": "object"}}}
    rf_text = (
        "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n"
        '{"type": "json_schema", "json_schema": {"name": "ans", "schema": {"type": "object"}}}'
    )
    msgs = [{"role": "system", "content": "S", "response_format": rf}, user("q")]
    assert render_prompt(msgs, "non-think") == B + "S\n\n" + rf_text + U + "q" + A + TE
    msgs[0]["tools"] = [TOOL_F]
    assert (
        render_prompt(msgs, "non-think")
        == B + "S\n\n" + tools_block(SCHEMA_F) + "\n\n" + rf_text + U + "q" + A + TE
    )


def test_tools_without_system_message_get_an_empty_one():
    msgs = attach_tools([user("q")], [TOOL_F])
    assert (
        render_prompt(msgs, "think-max")
        == B + MAX + "\n\n" + tools_block(SCHEMA_F) + U + "q" + A + T
    )


def test_developer_with_tools_and_latest_reminder():
    msgs = [
        {"role": "system", "content": "S"},
        {"role": "latest_reminder", "content": "2026-01-01"},
        {"role": "developer", "content": "task", "tools": [TOOL_F]},
    ]
    assert (
        render_prompt(msgs, "think-high")
        == B + "S" + LR + "2026-01-01" + U + "task\n\n" + tools_block(SCHEMA_F) + A + T
    )


def test_request_tools_clash_with_message_tools():
    with pytest.raises(MessageFormatError):
        attach_tools([{"role": "system", "content": "", "tools": [TOOL_F]}], [TOOL_F])
