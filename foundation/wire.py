"""Wire (protobuf) <-> dataclasses and OpenAI-shaped dicts for the worker API, shared by the worker and the services
that forward to it (jobs, agent, gateway), so every hop holds a request to the same bounds. Malformed input raises
ValueError with a message naming the field; the service turns it into INVALID_ARGUMENT.

Every size a client controls in the chat parts of a request (messages, tools, JSON schemas, stop strings) is bounded
here, by `InputLimits`, before anything is parsed or reaches the engine."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from typing import Any

from foundation.chat import ChatMode
from foundation.sampling import BATCH, INTERACTIVE, SamplingParams
from protos.dsv4.worker.v1 import worker_pb2 as pb

_MODES = {pb.REASONING_MODE_UNSPECIFIED: ChatMode.NON_THINK, pb.NON_THINK: ChatMode.NON_THINK,
          pb.THINK_HIGH: ChatMode.THINK_HIGH, pb.THINK_MAX: ChatMode.THINK_MAX}
_FINISH = {"stop": pb.STOP, "length": pb.LENGTH, "abort": pb.CANCELLED, "tool_calls": pb.TOOL_CALLS}
_SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "frequency_penalty",
                    "presence_penalty", "seed", "max_tokens", "ignore_eos", "top_logprobs")
_TOOL_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # as the gateway and OpenAI accept: no quotes or markup in the DSML


@dataclass(frozen=True)
class InputLimits:
    """What one request may carry; `WorkerSettings` has the same names and documents the defaults."""

    max_input_bytes: int = 16 << 20  # messages, tools, schemas, system prompt and text, as sent
    max_schema_bytes: int = 64 << 10  # tools and response format: they compile into a grammar
    max_messages: int = 10_000
    max_tools: int = 128
    max_tool_name_chars: int = 64
    max_json_depth: int = 64
    max_stop_strings: int = 16
    max_stop_string_chars: int = 1024
    max_stop_token_ids: int = 1024
    min_commit_every: int = 32  # generated tokens between a request's commits, at the least: each writes a tail

    @classmethod
    def from_settings(cls, settings: Any) -> InputLimits:
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


DEFAULT_LIMITS = InputLimits()


@dataclass
class ChatInput:
    """A request's chat parts, parsed: messages (None when its input is not messages), tools, response format."""

    messages: list[dict[str, Any]] | None
    tools: list[dict[str, Any]]
    response_format: dict[str, Any] | None


def chat_input(request, limits: InputLimits = DEFAULT_LIMITS) -> ChatInput:
    """The chat parts of a Generate, CreateSession, AppendSession or Tokenize request, its sizes checked first."""
    names = request.DESCRIPTOR.fields_by_name
    has_messages = "messages" in names and request.WhichOneof("input") == "messages"
    size = request.ByteSize() - (request.token_ids.ByteSize() if "token_ids" in names else 0)
    if size > limits.max_input_bytes:
        raise ValueError(f"request: {size} bytes of messages, tools and text; at most {limits.max_input_bytes} "
                         "(max_input_bytes)")
    schema = request.response_format.json_schema if "response_format" in names else \
        getattr(request, "response_format_json_schema", "")
    schema_size = len(schema.encode()) + sum(t.ByteSize() for t in getattr(request, "tools", ()))
    if schema_size > limits.max_schema_bytes:
        raise ValueError(f"tools, response_format: {schema_size} bytes; at most {limits.max_schema_bytes} "
                         "(max_schema_bytes)")
    where = "response_format.json_schema" if "response_format" in names else "response_format_json_schema"
    return ChatInput(messages(request.messages.messages, limits) if has_messages else None,
                     tools(getattr(request, "tools", ()), limits), json_schema(schema, where, limits))


def mode(value: int) -> ChatMode:
    if value not in _MODES:
        raise ValueError(f"mode: unknown reasoning mode {value}")
    return _MODES[value]


def priority(value: int) -> int:
    if value not in (pb.PRIORITY_UNSPECIFIED, pb.INTERACTIVE, pb.BATCH):
        raise ValueError(f"priority: unknown priority {value}")
    return BATCH if value == pb.BATCH else INTERACTIVE


def sampling(message: pb.SamplingParams, vocab_size: int, limits: InputLimits = DEFAULT_LIMITS) -> SamplingParams:
    """Only fields the caller set override the engine's defaults (proto3 optional presence)."""
    if len(message.stop) > limits.max_stop_strings:
        raise ValueError(f"sampling.stop: {len(message.stop)} stop strings; at most {limits.max_stop_strings} "
                         "(max_stop_strings)")
    longest = max((len(stop) for stop in message.stop), default=0)
    if longest > limits.max_stop_string_chars:
        raise ValueError(f"sampling.stop: a stop string of {longest} characters; at most "
                         f"{limits.max_stop_string_chars} (max_stop_string_chars)")
    if len(message.stop_token_ids) > limits.max_stop_token_ids:
        raise ValueError(f"sampling.stop_token_ids: {len(message.stop_token_ids)} ids; at most "
                         f"{limits.max_stop_token_ids} (max_stop_token_ids)")
    given: dict[str, Any] = {name: getattr(message, name) for name in _SAMPLING_FIELDS if message.HasField(name)}
    given["logit_bias"] = dict(message.logit_bias)
    given["stop"] = tuple(message.stop)
    given["stop_token_ids"] = tuple(message.stop_token_ids)
    params = SamplingParams(**given)
    params.validate(vocab_size)
    return params


def tool_choice(message: pb.ToolChoice) -> str:
    """"auto" (also when unset), "none", "required" or the named tool."""
    which = message.WhichOneof("choice")
    if which == "function":
        if not message.function:
            raise ValueError("tool_choice.function: name a tool")
        return message.function
    return which or "auto"


def json_schema(text: str, where: str, limits: InputLimits = DEFAULT_LIMITS) -> dict[str, Any] | None:
    """A JSON schema object given as text; None for empty text."""
    if not text:
        return None
    return _json_object(text, where, limits)


def tools(items, limits: InputLimits = DEFAULT_LIMITS) -> list[dict[str, Any]]:
    """OpenAI tool dicts."""
    if len(items) > limits.max_tools:
        raise ValueError(f"tools: {len(items)} tools; at most {limits.max_tools} (max_tools)")
    out, names = [], set()
    for i, t in enumerate(items):
        _tool_name(t.name, f"tools[{i}].name", limits)
        if t.name in names:
            raise ValueError(f"tools[{i}].name: a second tool named {t.name!r}")
        names.add(t.name)
        out.append({"type": "function", "function": {
            "name": t.name, "description": t.description,
            "parameters": _json_object(t.parameters_json or "{}", f"tools[{i}].parameters_json", limits)}})
    return out


def messages(items, limits: InputLimits = DEFAULT_LIMITS) -> list[dict[str, Any]]:
    """OpenAI-style message dicts."""
    if len(items) > limits.max_messages:
        raise ValueError(f"messages: {len(items)} messages; at most {limits.max_messages} (max_messages)")
    out = []
    for i, m in enumerate(items):
        message: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.role == "tool" and not m.tool_call_id:
            raise ValueError(f"messages[{i}].tool_call_id: a tool message answers a tool call; name it")
        if m.reasoning_content:
            message["reasoning_content"] = m.reasoning_content
        if m.tool_calls:
            message["tool_calls"] = [_tool_call(c, f"messages[{i}].tool_calls[{j}]", limits)
                                     for j, c in enumerate(m.tool_calls)]
        if m.tool_call_id:
            message["tool_call_id"] = m.tool_call_id
        if m.name:
            message["name"] = m.name
        out.append(message)
    return out


def tool_call(index: int, name: str, arguments: dict[str, Any], request_id: str) -> pb.ToolCall:
    return pb.ToolCall(id=f"call_{request_id}_{index}", name=name, arguments_json=json.dumps(arguments))


def finish_reason(reason: str, has_tool_calls: bool) -> int:
    return pb.TOOL_CALLS if reason == "stop" and has_tool_calls else _FINISH.get(reason, pb.FINISH_REASON_UNSPECIFIED)


def _tool_call(call: pb.ToolCall, where: str, limits: InputLimits) -> dict[str, Any]:
    _tool_name(call.name, f"{where}.name", limits)
    arguments = _json_object(call.arguments_json or "{}", f"{where}.arguments_json", limits)
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": json.dumps(arguments)}}


def _tool_name(name: str, where: str, limits: InputLimits) -> None:
    if len(name) > limits.max_tool_name_chars:
        raise ValueError(f"{where}: {len(name)} characters; at most {limits.max_tool_name_chars} "
                         "(max_tool_name_chars)")
    if not _TOOL_NAME.fullmatch(name):
        raise ValueError(f"{where}: a tool name is letters, digits, '_', '-' and '.', got {name!r}")


def _json_object(text: str, where: str, limits: InputLimits) -> dict[str, Any]:
    value = _json(text, where, limits)
    if not isinstance(value, dict):
        raise ValueError(f"{where}: must be a JSON object, got {type(value).__name__}")
    return value


def _json(text: str, where: str, limits: InputLimits) -> Any:
    """Parsed JSON no deeper than `max_json_depth` (the parser, the grammar compiler and the chat encoder all
    recurse over it)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"{where}: nested deeper than {limits.max_json_depth} (max_json_depth)") from None
    except ValueError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc})") from None
    if nesting(value) > limits.max_json_depth:
        raise ValueError(f"{where}: nested deeper than {limits.max_json_depth} (max_json_depth)")
    return value


def nesting(value: Any) -> int:
    """How deep objects and arrays nest in `value` (0 for a scalar), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest
