"""The Responses API's request at the edge: the body, its input items as worker messages (or a jobs service request),
each malformed item a ValueError (400) before anything runs. The Response object is in responses_shapes.py, routes
and the session mapping in responses.py."""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, model_validator

from foundation.clients.jobs import JobRequest
from foundation.clients.worker import Message, Tool, ToolCall
from services.gateway.openai_fields import RESPONSES
from services.gateway.openai_types import Edge, FunctionDef, GenerationFields, arguments_object, effort_mode, text_of
from services.openai_shapes import InputLimits, cache_affinity, response_schema


class FunctionTool(FunctionDef):
    """A Responses function tool: {type, name, description, parameters, strict}, flat (chat nests `function`)."""

    type: str = "function"
    strict: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _functions_only(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type", "function") != "function":
            raise ValueError(f"{data.get('type')!r} tools are not supported; only function tools")
        return data


class ReasoningOptions(Edge):
    effort: str | None = None
    summary: str | None = None


class ResponsesRequest(GenerationFields):
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[FunctionTool] | None = None  # type: ignore[assignment] - the flat form, not chat's
    text: dict[str, Any] | None = None
    reasoning: ReasoningOptions | None = None
    max_output_tokens: int | None = Field(None, gt=0)
    store: bool = True
    previous_response_id: str | None = None
    background: bool = False
    stream: bool = False
    metadata: dict[str, str] | None = None
    user: str | None = None
    conversation: Any = None
    prompt: Any = None
    include: list[str] | None = None
    truncation: str | None = None
    parallel_tool_calls: bool | None = None
    prompt_cache_key: str | None = Field(None, max_length=1024)

    def affinity(self, tenant: str) -> str:
        """What sends a new conversation to the worker whose prefix cache may hold its start: the caller's
        `prompt_cache_key`, else its instructions and first input."""
        first = self.input if isinstance(self.input, str) else json.dumps(self.input[:1], default=str)
        return cache_affinity(tenant, self.prompt_cache_key, [self.instructions or "", first])

    @model_validator(mode="before")
    @classmethod
    def _refused_fields(cls, body: Any) -> Any:
        return RESPONSES.refuse(body)

    def check(self, limits: InputLimits) -> None:
        """The request well formed and within the gateway's bounds (ValueError otherwise), before any session is
        made for it."""
        items = 1 if isinstance(self.input, str) else len(self.input)
        limits.check(items, [t.parameters for t in self.tools or ()], self.schema())
        self.mode()  # an unknown effort, logit_bias keys that are not token ids: ValueError now
        self.sampling(self.max_output_tokens)

    def worker_tools(self) -> list[Tool] | None:
        return None if self.tools is None else [Tool(t.name, t.description, t.parameters) for t in self.tools]

    def effort(self) -> str | None:
        return self.reasoning.effort if self.reasoning else None

    def mode(self) -> str:
        if self.effort() is None and self.background:
            return "think-max"  # background is how Think Max runs: it is the default there
        return self._chosen_mode or effort_mode(self.effort())

    def schema(self) -> dict[str, Any] | None:
        return response_schema((self.text or {}).get("format"))


def input_messages(value: str | list[dict[str, Any]], known: set[str], max_depth: int) -> list[Message]:
    """The input as worker messages. `known` holds the ids and call ids of the previous response's output: items
    echoed back from it are already in the conversation, as is any reasoning (the session keeps the model's own).
    Arguments given as JSON text may nest at most `max_depth` deep."""
    if isinstance(value, str):
        return [Message("user", value)]
    messages: list[Message] = []
    for i, item in enumerate(value):
        kind = item.get("type", "message")
        message = _item_message(item, kind, i, max_depth)  # echoed items too: they are stored and listed
        echoed = [item.get("id"), item.get("call_id") if kind == "function_call" else None]
        if message is None or any(key in known for key in echoed if key is not None):
            continue
        if kind == "function_call" and messages and messages[-1].role == "assistant":
            messages[-1].tool_calls += message.tool_calls  # the calls of one assistant turn
        else:
            messages.append(message)
    if not messages:
        raise ValueError("input: no new item (those echoed from the previous response are in the conversation)")
    return messages


def _item_message(item: dict[str, Any], kind: Any, i: int, max_depth: int) -> Message | None:
    """One input item as a worker message (None for reasoning, which the session keeps); ValueError if malformed."""
    if not isinstance(item.get("id", ""), str):
        raise ValueError(f"input[{i}].id: a string")
    if kind == "reasoning":
        return None
    if kind == "message":
        role = _field(item, "role", i)
        if role not in ("user", "assistant", "system", "developer"):
            raise ValueError(f"input[{i}].role: user, assistant, system or developer, not {role!r}")
        return Message(role, text_of(item.get("content"), f"input[{i}].content"))
    if kind == "function_call":
        call = ToolCall(_field(item, "call_id", i), _field(item, "name", i),
                        arguments_object(item.get("arguments"), f"input[{i}]", max_depth))
        return Message("assistant", tool_calls=[call])
    if kind == "function_call_output":
        output = text_of(item.get("output"), f"input[{i}].output")
        return Message("tool", output, tool_call_id=_field(item, "call_id", i))
    raise ValueError(f"input[{i}]: items of type {kind!r} are not supported")


def _field(item: dict[str, Any], name: str, i: int) -> str:
    if not item.get(name) or not isinstance(item[name], str):
        raise ValueError(f"input[{i}].{name}: a string, required for a {item.get('type', 'message')} item")
    return item[name]


def known_items(response: dict[str, Any]) -> set[str]:
    return {key for item in response.get("output", ()) for key in (item.get("id"), item.get("call_id")) if key}


def input_item_objects(response_id: str, value: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A stored response's input as /input_items lists it: items with ids, message content as text parts."""
    items = [{"type": "message", "role": "user", "content": value}] if isinstance(value, str) else value
    listed = [{**item, "id": item.get("id") or item_id("in", response_id, n)} for n, item in enumerate(items)]
    for item in listed:
        if item.get("type", "message") == "message":
            kind = "output_text" if item["role"] == "assistant" else "input_text"
            text = text_of(item.get("content"))
            item.update(type="message", status="completed", content=[{"type": kind, "text": text}])
    return listed


def job_request(response_id: str, session_id: str, body: ResponsesRequest, messages: list[Message],
                choice: str | None) -> JobRequest:
    """The jobs service's request for a background response: the new input, continuing `session_id`; `choice` the
    tool_choice as the worker takes it."""
    return JobRequest(response_id, messages, mode=body.mode(), sampling=body.sampling(body.max_output_tokens),
                      tool_choice=choice or None, response_format=body.schema(), session_id=session_id)


def item_id(prefix: str, response_id: str, index: int) -> str:
    return f"{prefix}_{response_id.removeprefix('resp_')}_{index}"
