"""Render OpenAI-style messages to the exact DeepSeek-V4 prompt text (official `encoding_dsv4.py`
semantics, reproduced byte for byte on the four official golden pairs).

A final user / tool / developer turn gets the generation prefix `<｜Assistant｜>` + `<think>`
(thinking) or `</think>` (chat); a conversation ending in an assistant message gets none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from foundation.chat.dsml import render_tool_calls, render_tools_block, to_json
from foundation.chat.messages import Message, drop_thinking, last_user_index, prepare_messages
from foundation.chat.protocol import (
    ASSISTANT,
    BOS,
    EOS,
    LATEST_REMINDER,
    RESPONSE_FORMAT_PREFIX,
    TASK_TOKENS,
    THINK_END,
    THINK_MAX_INSTRUCTION,
    THINK_START,
    TOOL_RESULT_CLOSE,
    TOOL_RESULT_OPEN,
    USER,
    ChatMode,
)
from foundation.chat.tokenizer import Tokenizer, load_tokenizer


def _system_extras(msg: Message) -> str:
    text = ""
    if msg.tools:
        text += "\n\n" + render_tools_block(msg.tools)
    if msg.response_format:
        text += "\n\n" + RESPONSE_FORMAT_PREFIX + to_json(msg.response_format)
    return text


def render_body(msg: Message, *, show_reasoning: bool) -> str:
    """A message's own text, without the transition that may follow it.

    `show_reasoning`: for assistant messages, whether `reasoning</think>` precedes the content.
    """
    if msg.role == "system":
        return msg.content + _system_extras(msg)
    if msg.role == "developer":
        return USER + msg.content + _system_extras(msg)
    if msg.role == "user":
        parts = [
            b.text if b.kind == "text" else TOOL_RESULT_OPEN + b.text + TOOL_RESULT_CLOSE
            for b in msg.blocks
        ]
        return USER + "\n\n".join(parts)
    if msg.role == "latest_reminder":
        return LATEST_REMINDER + msg.content
    if msg.role == "assistant":
        text = (msg.reasoning or "") + THINK_END if show_reasoning else ""
        text += msg.content
        if msg.tool_calls:
            text += "\n\n" + render_tool_calls([(tc.name, tc.arguments) for tc in msg.tool_calls])
        return text if msg.wo_eos else text + EOS
    raise AssertionError(f"role {msg.role!r} must have been merged or rejected before rendering")


def render_transition(msg: Message, next_role: str | None, *, open_thinking: bool) -> str:
    """What follows a message when the next one is an assistant / latest_reminder message or none.

    `open_thinking`: after a user turn in thinking mode, whether the assistant turn opens with
    `<think>` (reasoning follows) rather than `</think>` (reasoning dropped or chat mode).
    """
    if next_role is not None and next_role not in ("assistant", "latest_reminder"):
        return ""
    if msg.task is not None:
        if msg.task != "action":
            return TASK_TOKENS[msg.task]
        return ASSISTANT + (THINK_START if msg.thinking else THINK_END) + TASK_TOKENS["action"]
    if msg.role in ("user", "developer"):
        return ASSISTANT + (THINK_START if msg.thinking and open_thinking else THINK_END)
    return ""


def render_messages(msgs: Sequence[Message], *, think_max: bool, drop: bool) -> str:
    """Render prepared messages (merged and sorted; each carrying its thinking flag) after BOS.

    `drop`: official drop_thinking — reasoning before the last user turn is not shown and those
    earlier turns open with `</think>`. `think_max` writes the Think Max instruction after BOS.
    """
    last_user = last_user_index(msgs)
    out = [BOS]
    for i, msg in enumerate(msgs):
        if i == 0 and think_max:
            out.append(THINK_MAX_INSTRUCTION)
        # A task reply is a classification label: it never carries reasoning.
        prev_task = i > 0 and msgs[i - 1].task is not None
        show = msg.thinking and not prev_task and (not drop or i > last_user)
        out.append(render_body(msg, show_reasoning=show))
        next_role = msgs[i + 1].role if i + 1 < len(msgs) else None
        out.append(render_transition(msg, next_role, open_thinking=not drop or i >= last_user))
    return "".join(out)


def render_prompt(
    messages: Sequence[Mapping[str, Any]], mode: ChatMode | str, *, keep_thinking: bool = False
) -> str:
    """Exact prompt text for `messages` in `mode`.

    Args:
        messages: OpenAI-style dicts (system/developer/user/assistant/tool/latest_reminder);
            tools and response_format sit on a system or developer message.
        mode: "non-think", "think-high" or "think-max".
        keep_thinking: keep the reasoning of every earlier assistant turn (the append-only variant).
            By default it follows the official encoder: dropped before the last user turn, unless
            any message defines tools.
    Raises:
        MessageFormatError: on a malformed message list.
    """
    mode = ChatMode.parse(mode)
    msgs = prepare_messages(messages)
    for msg in msgs:
        msg.thinking = mode.thinking
    drop = not keep_thinking and not any(m.tools for m in msgs)
    if mode.thinking and drop:
        msgs = drop_thinking(msgs)
    else:
        drop = False
    return render_messages(msgs, think_max=mode is ChatMode.THINK_MAX, drop=drop)


def encode_prompt(
    messages: Sequence[Mapping[str, Any]],
    mode: ChatMode | str,
    *,
    keep_thinking: bool = False,
    tokenizer: Tokenizer | None = None,
) -> list[int]:
    """Token ids of `render_prompt(...)` (BOS included, as part of the text)."""
    text = render_prompt(messages, mode, keep_thinking=keep_thinking)
    return (tokenizer or load_tokenizer()).encode(text)
