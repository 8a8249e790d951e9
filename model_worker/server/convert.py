"""Wire (protobuf) <-> engine (dataclasses, OpenAI-shaped dicts) for the worker API. Malformed input raises
ValueError with a message naming the field; the service turns it into INVALID_ARGUMENT."""

from __future__ import annotations

import json
from typing import Any

from model_worker.chat import ChatMode
from model_worker.engine import BATCH, INTERACTIVE
from model_worker.sampling import SamplingParams
from protos.dsv4.worker.v1 import worker_pb2 as pb

_MODES = {pb.REASONING_MODE_UNSPECIFIED: ChatMode.NON_THINK, pb.NON_THINK: ChatMode.NON_THINK,
          pb.THINK_HIGH: ChatMode.THINK_HIGH, pb.THINK_MAX: ChatMode.THINK_MAX}
_FINISH = {"stop": pb.STOP, "length": pb.LENGTH, "abort": pb.CANCELLED, "tool_calls": pb.TOOL_CALLS}
_SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "frequency_penalty",
                    "presence_penalty", "seed", "max_tokens", "ignore_eos", "top_logprobs")


def mode(value: int) -> ChatMode:
    if value not in _MODES:
        raise ValueError(f"mode: unknown reasoning mode {value}")
    return _MODES[value]


def priority(value: int) -> int:
    if value not in (pb.PRIORITY_UNSPECIFIED, pb.INTERACTIVE, pb.BATCH):
        raise ValueError(f"priority: unknown priority {value}")
    return BATCH if value == pb.BATCH else INTERACTIVE


def sampling(message: pb.SamplingParams, vocab_size: int) -> SamplingParams:
    """Only fields the caller set override the engine's defaults (proto3 optional presence)."""
    fields: dict[str, Any] = {name: getattr(message, name) for name in _SAMPLING_FIELDS if message.HasField(name)}
    fields["logit_bias"] = dict(message.logit_bias)
    fields["stop"] = tuple(message.stop)
    fields["stop_token_ids"] = tuple(message.stop_token_ids)
    params = SamplingParams(**fields)
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


def json_schema(text: str, where: str) -> dict[str, Any] | None:
    """A JSON schema object given as text; None for empty text."""
    if not text:
        return None
    schema = _json(text, where)
    if not isinstance(schema, dict):
        raise ValueError(f"{where}: a JSON schema must be an object")
    return schema


def tools(items) -> list[dict[str, Any]]:
    """OpenAI tool dicts."""
    return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": _json(t.parameters_json or "{}", f"tools[{i}]")}}
            for i, t in enumerate(items)]


def messages(items) -> list[dict[str, Any]]:
    """OpenAI-style message dicts."""
    out = []
    for i, m in enumerate(items):
        message: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.reasoning_content:
            message["reasoning_content"] = m.reasoning_content
        if m.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": json.dumps(_json(c.arguments_json or "{}",
                                                                            f"messages[{i}].tool_calls"))}}
                for c in m.tool_calls]
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


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc})") from None
