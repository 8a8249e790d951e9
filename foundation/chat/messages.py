"""OpenAI-style messages -> validated internal messages, with the official V4 preprocessing:
tool results merged into user turns, sorted by tool-call order, and earlier reasoning dropped."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from foundation.chat.errors import MessageFormatError
from foundation.chat.protocol import TASK_TOKENS

ROLES = ("system", "developer", "user", "assistant", "tool", "latest_reminder")


@dataclass
class ToolCall:
    """One tool call of an assistant message; `id` is "" when the client gave none."""

    name: str
    arguments: dict[str, Any]
    id: str = ""


@dataclass
class Block:
    """A piece of a user turn: plain text, or a tool result answering `tool_call_id`."""

    kind: str  # "text" | "tool_result"
    text: str
    tool_call_id: str = ""


@dataclass
class Message:
    """A validated message. User turns keep their text in `blocks` (tool results merge in)."""

    role: str
    content: str = ""
    blocks: list[Block] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    response_format: Any = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    reasoning: str | None = None
    task: str | None = None
    wo_eos: bool = False
    # Per-turn thinking flag: sessions switch non-think/think per turn; one-shot renders set all.
    thinking: bool = False


def _text(value: Any, where: str, *, tool: bool = False) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts: list[str] = []
        for block in value:
            if not isinstance(block, Mapping):
                raise MessageFormatError(f"{where}: content blocks must be objects, got {block!r}")
            if block.get("type") == "text":
                parts.append(_text(block.get("text"), where))
            elif tool:
                parts.append(f"[Unsupported {block.get('type')}]")  # official tool-result behaviour
            else:
                raise MessageFormatError(
                    f"{where}: unsupported content block type {block.get('type')!r}"
                )
        # Official: tool-result text blocks join with a blank line; other text parts concatenate.
        return ("\n\n" if tool else "").join(parts)
    raise MessageFormatError(f"{where}: content must be a string, a list of text blocks or null")


def tool_schema(tool: Any, where: str) -> dict[str, Any]:
    """The function schema of an OpenAI tool {"type": "function", "function": {...}}, or a bare
    schema."""
    if not isinstance(tool, Mapping):
        raise MessageFormatError(f"{where}: each tool must be an object, got {tool!r}")
    schema = tool.get("function", tool)
    if not isinstance(schema, Mapping) or not isinstance(schema.get("name"), str):
        raise MessageFormatError(f"{where}: tool has no function name: {tool!r}")
    return dict(schema)


def _arguments(raw: Any, where: str) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        return dict(raw)
    if not isinstance(raw, str):
        raise MessageFormatError(f"{where}: arguments must be a JSON string or an object")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        # NOTE: the official encoder keeps undecodable arguments as one string parameter.
        return {"arguments": raw}
    if not isinstance(value, dict):
        raise MessageFormatError(f"{where}: arguments must decode to a JSON object, got {raw!r}")
    return value


def tool_call(raw: Any, where: str) -> ToolCall:
    """Accepts the OpenAI shape {"id", "type", "function": {"name", "arguments"}} or a bare
    {"name", "arguments"}."""
    if not isinstance(raw, Mapping):
        raise MessageFormatError(f"{where}: each tool call must be an object")
    fn = raw.get("function", raw)
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
        raise MessageFormatError(f"{where}: tool call has no function name: {raw!r}")
    call_id = raw.get("id") or fn.get("id") or ""
    return ToolCall(
        name=fn["name"], arguments=_arguments(fn.get("arguments", "{}"), where), id=str(call_id)
    )


def parse_message(raw: Any, index: int) -> Message:
    """Validate one OpenAI-style message. Unknown extra keys (name, mask, ...) are ignored."""
    where = f"messages[{index}]"
    if not isinstance(raw, Mapping):
        raise MessageFormatError(f"{where}: a message must be an object")
    role = raw.get("role")
    if role not in ROLES:
        raise MessageFormatError(
            f"{where}: unknown role {role!r}; expected one of {', '.join(ROLES)}"
        )
    msg = Message(role=role)
    if raw.get("tools"):
        if role not in ("system", "developer"):
            raise MessageFormatError(
                f"{where}: tools belong on a system or developer message, not {role}"
            )
        if not isinstance(raw["tools"], list):
            raise MessageFormatError(f"{where}: tools must be a list")
        msg.tools = [tool_schema(t, where) for t in raw["tools"]]
    if raw.get("response_format"):
        if role not in ("system", "developer"):
            raise MessageFormatError(
                f"{where}: response_format belongs on a system or developer message"
            )
        msg.response_format = raw["response_format"]
    if raw.get("tool_calls"):
        if role != "assistant" or not isinstance(raw["tool_calls"], list):
            raise MessageFormatError(f"{where}: tool_calls must be a list on an assistant message")
        msg.tool_calls = [tool_call(tc, where) for tc in raw["tool_calls"]]
    task = raw.get("task")
    if task is not None and task not in TASK_TOKENS:
        raise MessageFormatError(
            f"{where}: unknown task {task!r}; expected one of {', '.join(TASK_TOKENS)}"
        )
    msg.task = task
    msg.wo_eos = bool(raw.get("wo_eos", False))
    if role == "tool":
        text = _text(raw.get("content"), where, tool=True)
        msg.blocks = [Block("tool_result", text, str(raw.get("tool_call_id") or ""))]
    elif role == "user":
        msg.blocks = [Block("text", _text(raw.get("content"), where))]
    else:
        msg.content = _text(raw.get("content"), where)
    if role == "developer" and not msg.content:
        raise MessageFormatError(f"{where}: a developer message needs non-empty content")
    if role == "assistant":
        reasoning = raw.get("reasoning_content")
        if reasoning is not None and not isinstance(reasoning, str):
            raise MessageFormatError(f"{where}: reasoning_content must be a string")
        msg.reasoning = reasoning
    return msg


def merge_tool_messages(msgs: Sequence[Message]) -> list[Message]:
    """Fold `tool` messages (and user text after them) into one user turn: V4 has no tool role.

    Mirrors the official rule: a tool result joins the previous user turn if there is one; a user
    message joins a previous user turn unless that turn carries a task.
    """
    merged: list[Message] = []
    for msg in msgs:
        prev = merged[-1] if merged else None
        if msg.role == "tool":
            if prev is not None and prev.role == "user":
                prev.blocks.extend(msg.blocks)
            else:
                merged.append(
                    replace(msg, role="user", blocks=list(msg.blocks), task=None, wo_eos=False)
                )
        elif msg.role == "user" and prev is not None and prev.role == "user" and prev.task is None:
            prev.blocks.extend(msg.blocks)
        else:
            merged.append(replace(msg, blocks=list(msg.blocks)))
    return merged


def sort_tool_results(
    msgs: Sequence[Message], call_order: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Reorder tool results inside each user turn to follow the preceding assistant's tool_calls.

    Results whose id is unknown sort as position 0 (stable), like the official encoder. Returns the
    call order in force after the last message, so an incremental session can continue from it.
    """
    order: dict[str, int] = dict(call_order or {})
    for msg in msgs:
        if msg.role == "assistant" and msg.tool_calls:
            order = {tc.id: i for i, tc in enumerate(msg.tool_calls) if tc.id}
        elif msg.role == "user" and order:
            slots = [i for i, b in enumerate(msg.blocks) if b.kind == "tool_result"]
            if len(slots) > 1:
                ranked = sorted(
                    (msg.blocks[i] for i in slots), key=lambda b: order.get(b.tool_call_id, 0)
                )
                for slot, block in zip(slots, ranked, strict=True):
                    msg.blocks[slot] = block
    return order


def last_user_index(msgs: Sequence[Message]) -> int:
    """Index of the last user or developer message (-1 if none); merged tool results count."""
    for i in range(len(msgs) - 1, -1, -1):
        if msgs[i].role in ("user", "developer"):
            return i
    return -1


def drop_thinking(msgs: Sequence[Message]) -> list[Message]:
    """Official drop_thinking: before the last user turn, assistant reasoning is removed and
    developer messages are dropped entirely."""
    last = last_user_index(msgs)
    kept: list[Message] = []
    for i, msg in enumerate(msgs):
        if i >= last or msg.role in ("user", "system", "latest_reminder"):
            kept.append(msg)
        elif msg.role == "assistant":
            kept.append(replace(msg, reasoning=None))
    return kept


def prepare_messages(raw: Sequence[Any]) -> list[Message]:
    """Validate, merge tool results into user turns and sort them by call order."""
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence):
        raise MessageFormatError("messages must be a list of message objects")
    msgs = merge_tool_messages([parse_message(m, i) for i, m in enumerate(raw)])
    sort_tool_results(msgs)
    return msgs


def attach_tools(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] | None, response_format: Any = None
) -> list[dict[str, Any]]:
    """Put request-level tools / response_format on the first system or developer message, or on a
    new empty system message at the front when there is none."""
    out = [dict(m) for m in messages]
    extra = {
        k: v for k, v in (("tools", list(tools or [])), ("response_format", response_format)) if v
    }
    if not extra:
        return out
    for msg in out:
        if msg.get("role") in ("system", "developer"):
            clash = [k for k in extra if msg.get(k)]
            if clash:
                raise MessageFormatError(
                    f"{', '.join(clash)} given both on the request and on a message"
                )
            msg.update(extra)
            return out
    return [{"role": "system", "content": "", **extra}, *out]
