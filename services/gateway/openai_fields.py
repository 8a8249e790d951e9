"""Every request field of OpenAI's chat completions, Responses and legacy completions APIs, as the `openai` SDK's
parameter types name them, and what the gateway does with each, so none is silently dropped:

- implemented: it changes the reply as OpenAI documents (a field of the request model);
- recorded: accepted, and it does not change the reply (kept with a stored response, used for routing or accounting,
  or a hint the platform has no use for);
- refused: it would change the reply in a way the platform cannot: 400 naming the field, unless it holds the value
  that changes nothing (`modalities: ["text"]`).

tests/services/gateway/test_gateway_fields.py walks the SDK's own lists, so a field a new SDK adds fails the suite
until it is placed here. Fields outside OpenAI's API (a client's extensions) are ignored, as before."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.gateway.errors import ApiError

_ABSENT: Callable[[Any], bool] = lambda value: value is None  # noqa: E731 - a table of small predicates


@dataclass(frozen=True)
class Refused:
    why: str
    neutral: Callable[[Any], bool] = _ABSENT  # values that change nothing, so a client may send them


@dataclass(frozen=True)
class FieldTable:
    implemented: frozenset[str]
    recorded: frozenset[str]
    refused: Mapping[str, Refused] = field(default_factory=dict)

    def known(self) -> frozenset[str]:
        return self.implemented | self.recorded | frozenset(self.refused)

    def refuse(self, body: Any) -> Any:
        """The body, unless it sets a refused field to a value that would change the reply: then a 400 naming it
        (an ApiError, which pydantic lets through a validator, so the client gets the OpenAI error's `param`)."""
        if isinstance(body, Mapping):
            for name, refused in self.refused.items():
                if name in body and not refused.neutral(body[name]):
                    raise ApiError(400, f"{name}: {refused.why}", param=name, code="unsupported_parameter")
        return body


_SHARED_RECORDED = {
    "user": None, "safety_identifier": None, "service_tier": None,  # accounting hints: one tier here
    "prompt_cache_retention": None, "prompt_cache_options": None,  # the prefix cache keeps by its own policy
}
_TEXT_ONLY = "the model reads and writes text only"

CHAT = FieldTable(
    implemented=frozenset({
        "messages", "model", "tools", "tool_choice", "temperature", "top_p", "seed", "stop", "frequency_penalty",
        "presence_penalty", "logit_bias", "logprobs", "top_logprobs", "max_tokens", "max_completion_tokens",
        "response_format", "reasoning_effort", "stream", "stream_options", "n", "prompt_cache_key",
        "parallel_tool_calls"}),
    recorded=frozenset({*_SHARED_RECORDED, "metadata", "store"}),  # chat completions are not stored here
    refused={
        "audio": Refused(_TEXT_ONLY),
        "modalities": Refused(_TEXT_ONLY, lambda value: value is None or list(value) == ["text"]),
        "prediction": Refused("predicted outputs are not supported"),
        "web_search_options": Refused("the platform has no web search"),
        "functions": Refused("the deprecated functions: use tools"),
        "function_call": Refused("the deprecated function_call: use tool_choice"),
        "verbosity": Refused("the reply's length is set by max_completion_tokens here"),
        "moderation": Refused("the platform does not moderate replies"),
    })

RESPONSES = FieldTable(
    implemented=frozenset({
        "input", "instructions", "model", "tools", "tool_choice", "temperature", "top_p", "text", "reasoning",
        "max_output_tokens", "store", "previous_response_id", "background", "stream", "metadata",
        "prompt_cache_key"}),
    recorded=frozenset(_SHARED_RECORDED),
    refused={
        "conversation": Refused("use previous_response_id to continue a conversation"),
        "prompt": Refused("stored prompt templates are not supported"),
        "include": Refused("no extra output fields (the reasoning text is always in the output)",
                           lambda value: not value),
        "truncation": Refused("only disabled: past the context, it fails", lambda v: v in (None, "disabled")),
        "parallel_tool_calls": Refused("one call per reply is enforced on /v1/chat/completions only",
                                       lambda v: v is None or v is True),
        "top_logprobs": Refused("logprobs are not returned by /v1/responses", lambda value: not value),
        "max_tool_calls": Refused("the number of tool calls is not bounded separately here"),
        "stream_options": Refused("no stream options on /v1/responses here"),
        "context_management": Refused("the session's context is managed by the platform"),
        "background_options": Refused("background responses take no options here"),
        "moderation": Refused("the platform does not moderate replies"),
        "image": Refused(_TEXT_ONLY),
        "access_programs": Refused("not supported"),
    })

COMPLETIONS = FieldTable(  # the legacy /v1/completions: a raw prompt, `suffix` as fill-in-the-middle
    implemented=frozenset({
        "model", "prompt", "suffix", "max_tokens", "temperature", "top_p", "seed", "stop", "frequency_penalty",
        "presence_penalty", "logit_bias", "logprobs", "n", "stream", "stream_options"}),
    recorded=frozenset({"user"}),
    refused={
        "echo": Refused("the prompt is not echoed back here", lambda value: not value),
        "best_of": Refused("server-side best-of is not supported: use n", lambda value: value in (None, 1)),
    })
