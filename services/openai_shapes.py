"""OpenAI's shapes as the jobs service and the gateway share them: the bounds every request's JSON is held to
(nesting depth, messages, tools, schema sizes), `tool_choice` and `response_format` read the same way at both edges,
and the response objects with their usage (with DeepSeek's `reasoning_content`)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from foundation import storable
from foundation.clients.worker import Final, TokenLogprob, Usage
from foundation.wire import InputLimits as WorkerLimits
from foundation.wire import nesting

TOOL_CHOICE_MODES = ("auto", "none", "required")
# OpenAI's reasoning_effort values, and this platform's mode names, to the worker's modes.
MODES = {"max": "think-max", "high": "think-high", "medium": "think-high", "low": "non-think", "minimal": "non-think",
         "none": "non-think", "think-max": "think-max", "think-high": "think-high", "non-think": "non-think"}


class TooDeep(ValueError):
    """JSON nested past the bound (INVALID_ARGUMENT / HTTP 400): deep values would exhaust the recursion of every
    parser and serializer after the edge."""


def check_depth(value: Any, limit: int, where: str) -> Any:
    """`value` if its arrays and objects nest at most `limit` deep, else TooDeep."""
    if nesting(value) > limit:
        raise TooDeep(f"{where}: JSON nested more than {limit} deep")
    return value


def load_json(text: str | bytes, where: str, max_depth: int) -> Any:
    """JSON text as a value nested at most `max_depth` deep that a store can keep; json.JSONDecodeError for text that
    is not JSON, TooDeep for text nested so deep that the parser itself gives up, Unstorable for NaN or Infinity, a
    NUL or an unpaired surrogate (foundation/storable.py)."""
    try:
        value = storable.loads(text, where)
    except RecursionError:
        raise TooDeep(f"{where}: JSON nested more than {max_depth} deep") from None
    return storable.check_json(check_depth(value, max_depth, where), where)


@dataclass(frozen=True)
class InputLimits:
    """What one generation request may hold, past which it is refused as invalid. Each service has them as settings;
    the defaults are the model worker's, which would refuse more anyway."""

    max_messages: int = WorkerLimits.max_messages
    max_tools: int = WorkerLimits.max_tools
    max_schema_bytes: int = WorkerLimits.max_schema_bytes  # each JSON schema (a tool's parameters, a response format)
    max_json_depth: int = WorkerLimits.max_json_depth

    def check(self, messages: int, tool_parameters: Sequence[Any], response_schema: Any) -> None:
        """ValueError naming the first bound a request passes: its count of messages, of tools, a schema's bytes."""
        if messages > self.max_messages:
            raise ValueError(f"messages: {messages}, more than the {self.max_messages} a request may hold")
        if len(tool_parameters) > self.max_tools:
            raise ValueError(f"tools: {len(tool_parameters)}, more than the {self.max_tools} a request may hold")
        schemas = [(f"tools[{i}] parameters", schema) for i, schema in enumerate(tool_parameters)]
        for where, schema in [*schemas, ("response_format schema", response_schema)]:
            size = len(json.dumps(schema, ensure_ascii=False).encode()) if schema is not None else 0
            if size > self.max_schema_bytes:
                raise ValueError(f"{where}: {size} bytes, over the {self.max_schema_bytes} a JSON schema may have")


def tool_choice_name(choice: Any, tool_names: Iterable[str] | None = None) -> str | None:
    """OpenAI's tool_choice as the worker takes it: "auto", "none", "required" or the name of the tool it forces.
    A named choice is {"type": "function", "function": {"name": ...}} (chat) or {"type": "function", "name": ...}
    (responses); with `tool_names` (the request's tools) it must name one of them."""
    if choice is None or isinstance(choice, str):
        if choice not in (None, *TOOL_CHOICE_MODES):
            raise ValueError(f"tool_choice: {', '.join(TOOL_CHOICE_MODES)} or {{type: function, function: {{name}}}}")
        return choice
    function = choice.get("function", choice) if isinstance(choice, dict) else None
    named = isinstance(function, dict) and choice.get("type", "function") == "function"
    name = function.get("name") if named else None
    if not isinstance(name, str) or not name:
        raise ValueError("tool_choice: a named choice is {type: function, function: {name: NAME}}")
    if tool_names is not None and name not in (names := list(tool_names)):
        raise ValueError(f"tool_choice: names {name!r}, which is not among the tools ({', '.join(names) or 'none'})")
    return name


def response_schema(response_format: Any) -> dict[str, Any] | None:
    """OpenAI's response_format (chat: the schema nested in `json_schema`) or text.format (responses: flat) as the
    JSON schema the worker enforces; None for plain text."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise ValueError("response_format: an object {type: text | json_object | json_schema, ...}")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind != "json_schema":
        raise ValueError("response_format.type: text, json_object or json_schema")
    spec = response_format.get("json_schema", response_format)
    if not isinstance(spec, dict):
        raise ValueError("response_format.json_schema: an object {name, schema, strict}")
    if not isinstance(spec.get("schema"), dict):
        raise ValueError("response_format.json_schema.schema: a JSON schema object")
    return spec["schema"]


def usage_object(usage: Usage, continued_session: bool = False) -> dict[str, Any]:
    """OpenAI usage: prompt_tokens counts the whole input the reply was computed from; cached_tokens the part whose
    state was reused (a session's history, a shared prefix) instead of prefilled; cache_write_tokens the part
    prefilled and kept for a later request, which only a continued session keeps (a stateless completion: none)."""
    prompt = usage.prompt_tokens + (usage.reused_tokens if continued_session else 0)
    return {"prompt_tokens": prompt, "completion_tokens": usage.completion_tokens,
            "total_tokens": prompt + usage.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.reused_tokens,
                                      "cache_write_tokens": usage.prefilled_tokens if continued_session else 0},
            "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens}}


def tool_call_objects(calls) -> list[dict[str, Any]]:
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
            for c in calls]


def chat_choice(index: int, final: Final, logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
    """One choice of a chat.completion: the finished generation's message (`logprobs` as logprobs_object gives
    them, when the request asked for them)."""
    message: dict[str, Any] = {"role": "assistant", "content": final.content,
                               "reasoning_content": final.reasoning_content or None}
    if final.tool_calls:
        message["tool_calls"] = tool_call_objects(final.tool_calls)
    return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": final.finish_reason or "stop"}


def chat_completion(call_id: str, model: str, choices: Sequence[dict[str, Any]] | Final,
                    usage: dict[str, Any]) -> dict[str, Any]:
    """The chat.completion object of finished generations (`choices` as chat_choice gives them, or one Final;
    `usage` as usage_object gives it)."""
    if isinstance(choices, Final):
        choices = [chat_choice(0, choices)]
    return {"id": call_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": list(choices), "usage": usage}


def logprobs_object(tokens: Iterable[TokenLogprob], token_bytes: Callable[[int], bytes]) -> dict[str, Any]:
    """OpenAI's `logprobs` of a choice: each generated content token with its text, UTF-8 bytes (a token may hold
    part of a character) and log probability, and the alternatives the request asked for (`top_logprobs`)."""
    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        data = token_bytes(token_id)
        return {"token": data.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(data)}

    return {"content": [{**entry(t.token_id, t.logprob), "top_logprobs": [entry(i, lp) for i, lp in t.top]}
                        for t in tokens], "refusal": None}


def cache_affinity(tenant: str, prompt_cache_key: str | None, opening: Iterable[object]) -> str:
    """The routing key that keeps requests sharing a prefix on one worker, whose prefix cache holds it (the
    `affinity` of WorkerPool.route): OpenAI's `prompt_cache_key` when the caller gives one, else the opening of the
    prompt (what every later call of a conversation, or every line of a batch, sends again), within the tenant."""
    key = prompt_cache_key or json.dumps([str(part)[:4096] for part in opening])
    return hashlib.sha256(f"{tenant}\0{key}".encode()).hexdigest()
