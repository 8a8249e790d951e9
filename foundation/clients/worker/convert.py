"""The one place where the client's dataclasses meet protobuf. JSON carried as text on the wire (tool-call arguments,
tool parameters, response schemas) is serialized here on the way out and parsed into dicts on the way in."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from foundation.clients.worker.errors import ProtocolError
from foundation.clients.worker.types import (
    Delta,
    Event,
    Final,
    FinishReason,
    Load,
    Message,
    ModelInfo,
    Sampling,
    SessionInfo,
    TokenLogprob,
    Tool,
    ToolCall,
    Usage,
)
from protos.dsv4.worker.v1 import worker_pb2 as pb

MODES = {"non-think": pb.NON_THINK, "think-high": pb.THINK_HIGH, "think-max": pb.THINK_MAX}
PRIORITIES = {"interactive": pb.INTERACTIVE, "batch": pb.BATCH}
FINISH_REASONS: dict[int, FinishReason] = {
    pb.FINISH_REASON_UNSPECIFIED: "",
    pb.STOP: "stop",
    pb.LENGTH: "length",
    pb.TOOL_CALLS: "tool_calls",
    pb.CANCELLED: "cancelled",
}
# SamplingParams' fields with explicit presence (proto3 optional); the repeated and map ones have none.
SAMPLING_SCALARS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "max_tokens",
    "top_logprobs",
    "ignore_eos",
    "logprobs",
)


def dump_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def load_object(text: str, what: str) -> dict[str, Any]:
    """A JSON object from the wire; empty text is the empty object. Anything else breaks the API's contract."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ProtocolError(f"{what} is not JSON: {error}") from error
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} is not a JSON object")
    return value


def enum_value(table: Mapping[str, int], name: str | None, what: str) -> int:
    if name is None:
        return 0
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}; expected one of {', '.join(table)}") from None


def tool_call_to_proto(call: ToolCall) -> pb.ToolCall:
    return pb.ToolCall(id=call.id, name=call.name, arguments_json=dump_json(call.arguments))


def tool_call_from_proto(msg: pb.ToolCall) -> ToolCall:
    return ToolCall(id=msg.id, name=msg.name, arguments=load_object(msg.arguments_json, f"arguments of {msg.name!r}"))


def message_to_proto(message: Message | Mapping[str, Any]) -> pb.ChatMessage:
    if isinstance(message, Mapping):
        message = message_from_openai(message)
    if not isinstance(message, Message):
        raise TypeError(f"expected a Message or an OpenAI-style message dict, got {type(message).__name__}")
    return pb.ChatMessage(
        role=message.role,
        content=message.content,
        reasoning_content=message.reasoning_content,
        tool_calls=[tool_call_to_proto(c) for c in message.tool_calls],
        tool_call_id=message.tool_call_id,
        name=message.name,
    )


def message_from_openai(message: Mapping[str, Any]) -> Message:
    """An OpenAI-style chat message dict (tool calls as {"id", "function": {"name", "arguments"}}, arguments a JSON
    string or an object), as agent frameworks hold their history."""
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function", call)
        arguments = function.get("arguments") or {}
        if isinstance(arguments, str):
            arguments = load_object(arguments, f"arguments of {function.get('name')!r}")
        calls.append(ToolCall(id=call.get("id", ""), name=function["name"], arguments=arguments))
    return Message(role=message["role"], content=message.get("content") or "",
                   reasoning_content=message.get("reasoning_content") or "", tool_calls=calls,
                   tool_call_id=message.get("tool_call_id") or "", name=message.get("name") or "")


def message_from_proto(msg: pb.ChatMessage) -> Message:
    return Message(
        role=msg.role,
        content=msg.content,
        reasoning_content=msg.reasoning_content,
        tool_calls=[tool_call_from_proto(c) for c in msg.tool_calls],
        tool_call_id=msg.tool_call_id,
        name=msg.name,
    )


def tool_to_proto(tool: Tool) -> pb.Tool:
    return pb.Tool(name=tool.name, description=tool.description, parameters_json=dump_json(tool.parameters))


def tool_from_proto(msg: pb.Tool) -> Tool:
    return Tool(msg.name, msg.description, load_object(msg.parameters_json, f"parameters of {msg.name!r}"))


def sampling_to_proto(sampling: Sampling) -> pb.SamplingParams:
    msg = pb.SamplingParams()
    for name in SAMPLING_SCALARS:
        value = getattr(sampling, name)
        if value is not None:
            setattr(msg, name, value)
    if sampling.logit_bias:
        msg.logit_bias.update(sampling.logit_bias)
    if sampling.stop:
        msg.stop.extend(sampling.stop)
    if sampling.stop_token_ids:
        msg.stop_token_ids.extend(sampling.stop_token_ids)
    return msg


def sampling_from_proto(msg: pb.SamplingParams) -> Sampling:
    sampling = Sampling(**{name: getattr(msg, name) for name in SAMPLING_SCALARS if msg.HasField(name)})
    sampling.logit_bias = dict(msg.logit_bias) or None
    sampling.stop = list(msg.stop) or None
    sampling.stop_token_ids = list(msg.stop_token_ids) or None
    return sampling


def delta_from_proto(msg: pb.Delta) -> Delta:
    logprobs = [TokenLogprob(lp.token_id, lp.logprob, [(t.token_id, t.logprob) for t in lp.top]) for lp in msg.logprobs]
    return Delta(text=msg.text, reasoning=msg.reasoning, token_ids=list(msg.token_ids), logprobs=logprobs)


def usage_from_proto(msg: pb.Usage) -> Usage:
    return Usage(
        prompt_tokens=msg.prompt_tokens,
        reused_tokens=msg.reused_tokens,
        prefilled_tokens=msg.prefilled_tokens,
        completion_tokens=msg.completion_tokens,
        reasoning_tokens=msg.reasoning_tokens,
        session_tokens=msg.session_tokens,
        session_rebuilt=msg.session_rebuilt,
        draft_tokens=msg.draft_tokens,
        accepted_draft_tokens=msg.accepted_draft_tokens,
    )


def final_from_proto(msg: pb.Final, request_id: str = "") -> Final:
    return Final(
        finish_reason=FINISH_REASONS.get(msg.finish_reason, ""),
        matched_stop=msg.matched_stop,
        usage=usage_from_proto(msg.usage),
        content=msg.content,
        reasoning_content=msg.reasoning_content,
        tool_calls=[tool_call_from_proto(c) for c in msg.tool_calls],
        request_id=request_id,
    )


def event_from_proto(response: pb.GenerateResponse) -> Event | None:
    """The event a response carries; None for one without an event (nothing to report to the caller)."""
    kind = response.WhichOneof("event")
    if kind == "delta":
        return delta_from_proto(response.delta)
    if kind == "tool_call":
        return tool_call_from_proto(response.tool_call)
    if kind == "final":
        return final_from_proto(response.final, response.request_id)
    return None


def session_from_proto(msg: pb.Session) -> SessionInfo:
    return SessionInfo(
        session_id=msg.session_id,
        tokens=msg.tokens,
        commit=msg.commit,
        commits_retained=list(msg.commits_retained),
        think_max=msg.think_max,
        reused_prefix_tokens=msg.reused_prefix_tokens,
        bytes_by_tier=dict(msg.bytes_by_tier),
        parent=msg.parent,
    )


def model_info_from_proto(msg: pb.ModelInfo) -> ModelInfo:
    return ModelInfo(
        model=msg.model,
        fingerprint=msg.fingerprint,
        numerics=msg.numerics,
        vocab_size=msg.vocab_size,
        max_context=msg.max_context,
        reasoning_modes=list(msg.reasoning_modes),
    )


def load_from_proto(msg: pb.Load) -> Load:
    return Load(
        waiting_requests=msg.waiting_requests,
        running_requests=msg.running_requests,
        kv_bytes_by_tier=dict(msg.kv_bytes_by_tier),
        tokens_per_second=msg.tokens_per_second,
    )
