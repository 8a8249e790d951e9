"""The Responses API's shapes at the edge: the request body, its input items as worker messages (or a jobs service
request), and the Response object with its output items, usage and streamed events, as the official `openai` SDK
parses them. Routes and the session mapping are in responses.py."""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, model_validator

from model_worker.client import Delta, Message, Tool, ToolCall
from model_worker.client import convert as wconvert
from protos.dsv4.jobs.v1 import jobs_pb2
from protos.dsv4.worker.v1 import worker_pb2
from services.gateway.errors import ApiError
from services.gateway.openai_types import FunctionDef, GenerationFields, effort_mode, response_schema, text_of


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


class ResponsesRequest(GenerationFields):
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[FunctionTool] | None = None  # type: ignore[assignment] - the flat form, not chat's
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
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

    def refuse_unsupported(self) -> None:
        """OpenAI fields the platform does not implement are refused: ignoring them would quietly change the reply."""
        for name, refused, why in (
                ("conversation", self.conversation is not None, "use previous_response_id to continue a conversation"),
                ("prompt", self.prompt is not None, "stored prompt templates are not supported"),
                ("include", bool(self.include), "no extra output fields (the reasoning text is always in the output)"),
                ("truncation", self.truncation not in (None, "disabled"), "only disabled: past the context, it fails"),
                ("parallel_tool_calls", self.parallel_tool_calls is False, "one call per turn cannot be enforced"),
                ("top_logprobs", bool(self.top_logprobs), "logprobs are not returned by /v1/responses")):
            if refused:
                raise ApiError(400, f"{name}: {why}", param=name, code="unsupported_parameter")

    def worker_tools(self) -> list[Tool] | None:
        return None if self.tools is None else [Tool(t.name, t.description, t.parameters) for t in self.tools]

    def effort(self) -> str | None:
        return (self.reasoning or {}).get("effort")

    def mode(self) -> str:
        if self.effort() is None and self.background:
            return "think-max"  # background is how Think Max runs: it is the default there
        return effort_mode(self.effort())

    def schema(self) -> dict[str, Any] | None:
        return response_schema((self.text or {}).get("format"))


def input_messages(value: str | list[dict[str, Any]], known: set[str]) -> list[Message]:
    """The input as worker messages. `known` holds the ids and call ids of the previous response's output: items
    echoed back from it are already in the conversation, as is any reasoning (the session keeps the model's own)."""
    if isinstance(value, str):
        return [Message("user", value)]
    messages: list[Message] = []
    for i, item in enumerate(value):
        kind = item.get("type", "message")
        if kind == "reasoning" or item.get("id") in known or (kind == "function_call" and item.get("call_id") in known):
            continue
        if kind == "message":
            role = _field(item, "role", i)
            if role not in ("user", "assistant", "system", "developer"):
                raise ValueError(f"input[{i}].role: user, assistant, system or developer, not {role!r}")
            messages.append(Message(role, text_of(item.get("content"))))
        elif kind == "function_call":
            call = ToolCall(_field(item, "call_id", i), _field(item, "name", i), _arguments(item, i))
            if messages and messages[-1].role == "assistant":  # the calls of one assistant turn
                messages[-1].tool_calls.append(call)
            else:
                messages.append(Message("assistant", tool_calls=[call]))
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append(Message("tool", output if isinstance(output, str) else text_of(output),
                                    tool_call_id=_field(item, "call_id", i)))
        else:
            raise ValueError(f"input[{i}]: items of type {kind!r} are not supported")
    if not messages:
        raise ValueError("input: no new item (those echoed from the previous response are in the conversation)")
    return messages


def _field(item: dict[str, Any], name: str, i: int) -> Any:
    if not item.get(name):
        raise ValueError(f"input[{i}].{name}: required for a {item.get('type', 'message')} item")
    return item[name]


def _arguments(item: dict[str, Any], i: int) -> dict[str, Any]:
    arguments = item.get("arguments") or "{}"
    value = json.loads(arguments) if isinstance(arguments, str) else arguments
    if not isinstance(value, dict):
        raise ValueError(f"input[{i}].arguments: a JSON object")
    return value


def known_items(response: dict[str, Any]) -> set[str]:
    return {key for item in response.get("output", ()) for key in (item.get("id"), item.get("call_id")) if key}


def input_item_objects(response_id: str, value: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A stored response's input as /input_items lists it: items with ids, message content as text parts."""
    items = [{"type": "message", "role": "user", "content": value}] if isinstance(value, str) else value
    listed = [{**item, "id": item.get("id") or _item_id("in", response_id, n)} for n, item in enumerate(items)]
    for item in listed:
        if item.get("type", "message") == "message":
            kind = "output_text" if item["role"] == "assistant" else "input_text"
            item.update(type="message", status="completed", content=[{"type": kind, "text": text_of(item["content"])}])
    return listed


def job_request(response_id: str, session_id: str, body: ResponsesRequest, messages: list[Message]
                ) -> jobs_pb2.JobRequest:
    """The jobs service's request for a background response: the new input, continuing `session_id`."""
    request = jobs_pb2.JobRequest(custom_id=response_id, session_id=session_id, mode=wconvert.MODES[body.mode()],
                                  messages=[wconvert.message_to_proto(m) for m in messages],
                                  sampling=wconvert.sampling_to_proto(body.sampling(body.max_output_tokens)))
    if choice := body.worker_tool_choice():
        flag = choice in ("auto", "none", "required")
        request.tool_choice.CopyFrom(worker_pb2.ToolChoice(**{choice: True} if flag else {"function": choice}))
    if (schema := body.schema()) is not None:
        request.response_format.json_schema = wconvert.dump_json(schema)
    return request


# -- the Response object -------------------------------------------------------------------------------------------

def new_response(response_id: str, body: ResponsesRequest, model: str, conversation: dict[str, Any],
                 created_at: int) -> dict[str, Any]:
    """The Response as it starts (in_progress, no output); `conversation` holds the instructions and tools."""
    return {"id": response_id, "object": "response", "created_at": created_at, "status": "in_progress",
            "background": body.background, "error": None, "incomplete_details": None,
            "instructions": conversation["instructions"] or None, "max_output_tokens": body.max_output_tokens,
            "metadata": body.metadata or {}, "model": model, "output": [], "parallel_tool_calls": True,
            "previous_response_id": body.previous_response_id,
            "reasoning": {"effort": body.effort(), "summary": None}, "store": body.store,
            "temperature": body.temperature, "text": {"format": (body.text or {}).get("format") or {"type": "text"}},
            "tool_choice": body.tool_choice or "auto",
            "tools": [{"type": "function", **tool, "strict": None} for tool in conversation["tools"]],
            "top_p": body.top_p, "truncation": "disabled", "usage": None, "user": body.user, "completed_at": None}


def ended(response: dict[str, Any], output: list[dict[str, Any]], finish_reason: str, usage: dict[str, Any],
          completed_at: int) -> dict[str, Any]:
    """The Response once its generation ended (a reply cut at max_output_tokens is `incomplete`, as OpenAI has it)."""
    status = {"length": "incomplete", "cancelled": "cancelled"}.get(finish_reason, "completed")
    details = {"reason": "max_output_tokens"} if status == "incomplete" else None
    return {**response, "status": status, "output": output, "usage": usage, "incomplete_details": details,
            "completed_at": completed_at}


def failed(response: dict[str, Any], message: str, completed_at: int) -> dict[str, Any]:
    return {**response, "status": "failed", "error": {"code": "server_error", "message": message},
            "completed_at": completed_at}


def from_completion(response: dict[str, Any], completion: dict[str, Any], cancelled: bool, fresh_tokens: int,
                    completed_at: int) -> dict[str, Any]:
    """The Response a background job's result (a chat.completion) gives; its prompt_tokens count only the new
    input, the reused history is its cached tokens."""
    [choice], counted = completion["choices"], completion["usage"]
    message, cached = choice["message"], counted["prompt_tokens_details"]["cached_tokens"]
    calls = [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []]
    output = output_items(response["id"], message.get("content") or "", message.get("reasoning_content") or "", calls)
    usage = response_usage(counted["prompt_tokens"] + cached, cached - fresh_tokens, counted["completion_tokens"],
                           counted["completion_tokens_details"]["reasoning_tokens"])
    return ended(response, output, "cancelled" if cancelled else choice["finish_reason"], usage, completed_at)


def response_usage(input_tokens: int, cached_tokens: int, output_tokens: int, reasoning_tokens: int) -> dict:
    return {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": max(0, cached_tokens)},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
            "total_tokens": input_tokens + output_tokens}


def output_items(response_id: str, content: str, reasoning: str, calls: list[tuple[str, str, str]]
                 ) -> list[dict[str, Any]]:
    """A finished reply's output: its reasoning, its message (when it has text, or nothing else came), its calls as
    (call id, name, arguments as JSON text); item ids as the streamed events give them."""
    items = []
    if reasoning:
        items.append(_text_item("reasoning", _item_id("rs", response_id, len(items)), reasoning))
    if content or not (reasoning or calls):
        items.append(_text_item("message", _item_id("msg", response_id, len(items)), content))
    for call in calls:
        items.append(_call_item(_item_id("fc", response_id, len(items)), *call))
    return items


def _item_id(prefix: str, response_id: str, index: int) -> str:
    return f"{prefix}_{response_id.removeprefix('resp_')}_{index}"


def _text_item(kind: str, item_id: str, text: str | None, status: str = "completed") -> dict[str, Any]:
    """A reasoning or message item; `text` None leaves its content empty (as a streamed item starts)."""
    parts = [] if text is None else [_part(kind, text)]
    if kind == "reasoning":
        return {"type": "reasoning", "id": item_id, "summary": [], "content": parts, "status": status}
    return {"type": "message", "id": item_id, "role": "assistant", "content": parts, "status": status}


def _part(kind: str, text: str) -> dict[str, Any]:
    if kind == "reasoning":
        return {"type": "reasoning_text", "text": text}
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _call_item(item_id: str, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": "completed"}


class EventStream:
    """The server-sent events of one streamed response: each output item opened, its text deltas, and the item
    whole when it closes. `items` is the output so far, in order (the final Response carries it)."""

    def __init__(self, response_id: str) -> None:
        self.response_id, self.items, self.sequence = response_id, [], 0
        self.open: str | None = None  # the kind of the last item while its text still grows

    def event(self, kind: str, **fields: Any) -> str:
        data = json.dumps({"type": kind, "sequence_number": self.sequence, **fields}, ensure_ascii=False)
        self.sequence += 1
        return f"event: {kind}\ndata: {data}\n\n"

    def feed(self, event: Any) -> list[str]:
        if isinstance(event, ToolCall):
            return self.close() + self._call(event)
        if not isinstance(event, Delta) or not event.text:
            return []
        kind = "reasoning" if event.reasoning else "message"
        chunks = [] if self.open == kind else self.close() + self._start(kind)
        index, item = len(self.items) - 1, self.items[-1]
        item["content"][0]["text"] += event.text
        name = "response.reasoning_text.delta" if kind == "reasoning" else "response.output_text.delta"
        extra = {} if kind == "reasoning" else {"logprobs": []}
        chunks.append(self.event(name, item_id=item["id"], output_index=index, content_index=0, delta=event.text,
                                 **extra))
        return chunks

    def close(self) -> list[str]:
        if self.open is None:
            return []
        index, item = len(self.items) - 1, self.items[-1]
        part, where = item["content"][0], {"item_id": item["id"], "output_index": index, "content_index": 0}
        item["status"], self.open = "completed", None
        name = "response.reasoning_text.done" if item["type"] == "reasoning" else "response.output_text.done"
        extra = {} if item["type"] == "reasoning" else {"logprobs": []}
        return [self.event(name, **where, text=part["text"], **extra),
                self.event("response.content_part.done", **where, part=part),
                self.event("response.output_item.done", output_index=index, item=item)]

    def _start(self, kind: str) -> list[str]:
        index = len(self.items)
        item = _text_item(kind, _item_id("rs" if kind == "reasoning" else "msg", self.response_id, index), None,
                          status="in_progress")
        chunks = [self.event("response.output_item.added", output_index=index, item=item)]
        item["content"].append(_part(kind, ""))
        chunks.append(self.event("response.content_part.added", item_id=item["id"], output_index=index,
                                 content_index=0, part=item["content"][0]))
        self.items.append(item)
        self.open = kind
        return chunks

    def _call(self, call: ToolCall) -> list[str]:
        index, arguments = len(self.items), json.dumps(call.arguments)
        item = _call_item(_item_id("fc", self.response_id, index), call.id, call.name, arguments)
        self.items.append(item)
        return [self.event("response.output_item.added", output_index=index,
                           item={**item, "arguments": "", "status": "in_progress"}),
                self.event("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                           delta=arguments),
                self.event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                           name=call.name, arguments=arguments),
                self.event("response.output_item.done", output_index=index, item=item)]
