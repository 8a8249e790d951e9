"""LangChain's messages, tools and tool choices to the worker client's dataclasses, and the worker's replies back as
AIMessages and stream chunks. The history a session holds is compared in the worker's form (`Message`), so every
message goes through `to_worker` the same way, whether it came from the caller or from a reply of ours."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.utils.function_calling import convert_to_openai_tool

from foundation.clients.worker import Final, Message, Tool, ToolCall, Usage

# OpenAI's reasoning_effort values (what LangChain callers pass) and the worker's own mode names, to its modes.
MODES = {"max": "think-max", "high": "think-high", "medium": "think-high", "low": "non-think", "minimal": "non-think",
         "none": "non-think", "think-max": "think-max", "think-high": "think-high", "non-think": "non-think"}
# A turn on a session must end with one of these (the generation prompt follows it).
TURN_ENDS = ("user", "tool", "developer")
# Content blocks that carry no text to render: the tool calls an AIMessage repeats in its content (its `tool_calls`
# carry them) and the reasoning (its own field).
_SKIPPED_AI_BLOCKS = ("tool_call", "tool_call_chunk", "tool_use", "invalid_tool_call", "reasoning", "non_standard")


class UnsupportedContent(ValueError):
    """A message the model cannot read: an image, audio or file block (the model takes text only), or a role the
    chat format has no place for."""


@dataclass
class Conversation:
    """A LangChain history in the worker's terms: the leading system messages (a session fixes its system prompt at
    creation), then every other message in order."""

    system_prompt: str
    messages: list[Message]

    @property
    def fits_a_session(self) -> bool:
        """Whether a session turn can carry it: no system message after the start (a session's head is fixed), and a
        last message after which the model replies."""
        return bool(self.messages) and self.messages[-1].role in TURN_ENDS and all(
            m.role != "system" for m in self.messages)


def _text(message: BaseMessage, where: str) -> str:
    readable = ("text", *_SKIPPED_AI_BLOCKS) if isinstance(message, AIMessage) else ("text",)
    for block in message.content_blocks:
        if block["type"] not in readable:
            raise UnsupportedContent(f"{where}: a {block['type']!r} block; the model reads text only")
    return message.text


def _reasoning(message: AIMessage) -> str:
    blocks = [b.get("reasoning", "") for b in message.content_blocks if b["type"] == "reasoning"]
    return "".join(blocks)


def to_worker(message: BaseMessage, index: int = 0) -> Message:
    """One message in the worker's form. An assistant message keeps no name (the chat format renders none, and
    LangGraph renames replies after the fact), so a reply compares equal to the one the session recorded."""
    where = f"messages[{index}]"
    if isinstance(message, AIMessage):
        calls = [ToolCall(id=c.get("id") or "", name=c["name"], arguments=dict(c["args"])) for c in message.tool_calls]
        return Message("assistant", _text(message, where), reasoning_content=_reasoning(message), tool_calls=calls)
    if isinstance(message, HumanMessage):
        return Message("user", _text(message, where), name=message.name or "")
    if isinstance(message, SystemMessage):
        return Message("system", _text(message, where))
    if isinstance(message, ToolMessage):
        return Message("tool", _text(message, where), tool_call_id=message.tool_call_id, name=message.name or "")
    if isinstance(message, ChatMessage) and message.role in ("user", "system", "developer", "assistant", "tool"):
        return Message(message.role, _text(message, where))
    raise UnsupportedContent(f"{where}: a {type(message).__name__} has no place in the chat format")


def conversation(messages: Sequence[BaseMessage]) -> Conversation:
    """Leading system messages join into the system prompt (one paragraph each); the rest keep their order."""
    converted = [to_worker(m, i) for i, m in enumerate(messages)]
    lead = 0
    while lead < len(converted) and converted[lead].role == "system":
        lead += 1
    return Conversation("\n\n".join(m.content for m in converted[:lead]), converted[lead:])


def tool(spec: Any) -> Tool:
    """A LangChain tool (BaseTool, function, pydantic model, TypedDict, OpenAI or JSON schema) as the worker's."""
    function = convert_to_openai_tool(spec)["function"]
    return Tool(function["name"], function.get("description", ""), function.get("parameters") or {})


def tool_choice(choice: Any, tools: Sequence[Tool]) -> str | None:
    """LangChain's tool_choice as the worker takes it: "auto", "none", "required" or a tool's name. "any" and True
    force some call; {"type": "function", "function": {"name": ...}} and a bare name force that tool."""
    if choice is None:
        return None
    if choice is True or choice == "any":
        return "required"
    if choice is False:
        return "none"
    if isinstance(choice, Mapping):
        function = choice.get("function", choice)
        choice = function.get("name") if isinstance(function, Mapping) else None
    if not isinstance(choice, str) or not choice:
        raise ValueError("tool_choice: 'auto', 'none', 'any'/'required', a tool's name or {type: function, ...}")
    names = [t.name for t in tools]
    if choice not in ("auto", "none", "required") and choice not in names:
        raise ValueError(f"tool_choice names {choice!r}, which is not among the tools ({', '.join(names) or 'none'})")
    return choice


def usage_metadata(usage: Usage) -> UsageMetadata:
    """Input counts everything the reply was computed from: the part whose state was reused (a session's history, a
    cached prefix: `cache_read`) and the part prefilled now."""
    input_tokens = usage.reused_tokens + usage.prefilled_tokens
    return UsageMetadata(input_tokens=input_tokens, output_tokens=usage.completion_tokens,
                         total_tokens=input_tokens + usage.completion_tokens,
                         input_token_details={"cache_read": usage.reused_tokens},
                         output_token_details={"reasoning": usage.reasoning_tokens})


def response_metadata(final: Final, model_name: str, session: Mapping[str, Any]) -> dict[str, Any]:
    """The finish reason, the model, the worker's own counters and the session the reply ran on (empty without
    one)."""
    counters = {name: getattr(final.usage, name) for name in ("prompt_tokens", "reused_tokens", "prefilled_tokens",
                                                              "completion_tokens", "session_tokens")}
    return {"model_name": model_name, "finish_reason": final.finish_reason or "stop", "worker_usage": counters,
            "request_id": final.request_id, **session}


def _tool_call_dicts(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    return [{"name": c.name, "args": c.arguments, "id": c.id, "type": "tool_call"} for c in calls]


def ai_message(final: Final, model_name: str, session: Mapping[str, Any]) -> AIMessage:
    extra = {"reasoning_content": final.reasoning_content} if final.reasoning_content else {}
    return AIMessage(content=final.content, additional_kwargs=extra, tool_calls=_tool_call_dicts(final.tool_calls),
                     usage_metadata=usage_metadata(final.usage),
                     response_metadata=response_metadata(final, model_name, session))


def text_chunk(text: str, reasoning: bool) -> AIMessageChunk:
    if reasoning:
        return AIMessageChunk(content="", additional_kwargs={"reasoning_content": text})
    return AIMessageChunk(content=text)


def tool_call_chunk(call: ToolCall, index: int) -> AIMessageChunk:
    """A whole call in one chunk (the worker sends each call once it is complete)."""
    return AIMessageChunk(content="", tool_call_chunks=[{"name": call.name, "args": json.dumps(call.arguments),
                                                         "id": call.id, "index": index, "type": "tool_call_chunk"}])


def last_chunk(final: Final, model_name: str, session: Mapping[str, Any]) -> AIMessageChunk:
    """Usage and metadata ride on the last chunk only: LangChain adds chunks' counts and concatenates their strings."""
    return AIMessageChunk(content="", usage_metadata=usage_metadata(final.usage),
                          response_metadata=response_metadata(final, model_name, session), chunk_position="last")


def reply_message(final: Final) -> Message:
    """A reply as the next call's history carries it back: what the session records it holds."""
    return to_worker(ai_message(final, "", {}))


def response_schema(response_format: Any) -> dict[str, Any] | None:
    """The JSON schema a reply's content must match: a JSON schema itself, or OpenAI's response_format ({type:
    json_schema, json_schema: {schema}}, {type: json_object}, {type: text} for none)."""
    if response_format is None:
        return None
    if not isinstance(response_format, Mapping):
        raise ValueError("response_format: a JSON schema or OpenAI's {type: json_schema | json_object | text, ...}")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema", response_format)
        if not isinstance(spec, Mapping) or not isinstance(spec.get("schema"), Mapping):
            raise ValueError("response_format.json_schema.schema: a JSON schema object")
        return dict(spec["schema"])
    return dict(response_format)
