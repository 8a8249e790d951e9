"""OpenAI request bodies at the edge (pydantic), turned into the typed client's arguments. Fields OpenAI defines
that the platform does not implement are refused by name, or recorded when they change nothing (openai_fields.py);
fields outside OpenAI's API are ignored. Every malformed value is a ValueError (400) here, before anything reaches a
worker; the bounds on counts, schema sizes and depth are the gateway's settings (`InputLimits`)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from foundation.clients.worker import Message, Sampling, Tool, ToolCall
from foundation.mode_policy import ModePolicy, OperatorLimits, TurnSignals
from services.gateway.openai_fields import CHAT
from services.openai_shapes import MODES, InputLimits, cache_affinity, load_json, response_schema, tool_choice_name

# reasoning_effort (chat) / reasoning.effort (responses) -> DeepSeek-V4's modes: the jobs service's table, so a
# request means the same through a batch line and through the gateway.
EFFORTS = {**{k: v for k, v in MODES.items() if "-" not in k}, "xhigh": "think-max"}
TEXT_PARTS = ("text", "input_text", "output_text")
FUNCTION_NAME = r"^[A-Za-z0-9_.-]+$"


class Edge(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FunctionDef(Edge):
    name: str = Field(min_length=1, max_length=64, pattern=FUNCTION_NAME)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolDef(Edge):
    type: Literal["function"] = "function"
    function: FunctionDef


class CalledFunction(Edge):
    name: str = Field(min_length=1, max_length=64, pattern=FUNCTION_NAME)
    arguments: str | dict[str, Any] = "{}"  # JSON text, as OpenAI sends it; an object as some frameworks hold it


class CalledTool(Edge):
    id: str = ""
    type: Literal["function"] = "function"
    function: CalledFunction


class ChatMessage(Edge):
    """One chat message: text content only (a string, or text parts joined)."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str = ""
    name: str = ""
    tool_calls: list[CalledTool] = Field(default_factory=list)
    tool_call_id: str = ""
    reasoning_content: str = ""

    @field_validator("content", mode="before")
    @classmethod
    def _text(cls, content: Any) -> str:
        return text_of(content)

    @field_validator("name", "tool_call_id", "reasoning_content", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return "" if value is None else value

    @field_validator("tool_calls", mode="before")
    @classmethod
    def _null_is_none(cls, value: Any) -> Any:
        return [] if value is None else value

    def worker_message(self, index: int, max_depth: int) -> Message:
        calls = [ToolCall(call.id, call.function.name,
                          arguments_object(call.function.arguments, f"messages[{index}].tool_calls[{n}]", max_depth))
                 for n, call in enumerate(self.tool_calls)]
        return Message(self.role, self.content, self.reasoning_content, calls, self.tool_call_id, self.name)


class SamplingFields(Edge):
    """The sampling fields every OpenAI generation request shares (chat, responses, completions)."""

    model: str
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None

    def sampled(self, max_tokens: int | None, logprobs: bool | None, top_logprobs: int | None) -> Sampling:
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        try:
            bias = {int(k): v for k, v in (self.logit_bias or {}).items()}
        except ValueError:
            raise ValueError("logit_bias: keys are token ids") from None
        return Sampling(temperature=self.temperature, top_p=self.top_p, seed=self.seed, max_tokens=max_tokens,
                        stop=stops or None, frequency_penalty=self.frequency_penalty,
                        presence_penalty=self.presence_penalty, logit_bias=bias or None, logprobs=logprobs,
                        top_logprobs=top_logprobs)


class GenerationFields(SamplingFields):
    """What chat completions and responses share: sampling, tools, the reasoning mode."""

    tools: list[ToolDef] | None = None
    tool_choice: str | dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    _chosen_mode: str | None = PrivateAttr(None)

    def effort(self) -> Any:
        """The reasoning effort the request names (None: none)."""
        raise NotImplementedError

    def choose_mode(self, policy: ModePolicy | None) -> None:
        """With the operator's mode policy on, a request that names no reasoning effort runs in the mode the policy
        picks from what the request shows (its tools; a stateless request's Think Max costs no extra prefill)."""
        if policy is not None and self.effort() is None:
            signals = TurnSignals(tool_count=len(self.tools or ()))
            self._chosen_mode = policy.choose(signals, OperatorLimits()).mode

    def worker_tools(self) -> list[Tool] | None:
        if not self.tools:
            return None
        return [Tool(t.function.name, t.function.description, t.function.parameters) for t in self.tools]

    def worker_tool_choice(self, tool_names: Iterable[str] | None = None) -> str | None:
        """The tool_choice as the worker takes it; a named one must name one of `tool_names` (default: the
        request's own tools)."""
        names = [tool.name for tool in self.worker_tools() or ()] if tool_names is None else tool_names
        return tool_choice_name(self.tool_choice, names)

    def sampling(self, max_tokens: int | None) -> Sampling:
        return self.sampled(max_tokens, self.logprobs, self.top_logprobs or None)


class StreamOptions(Edge):
    include_usage: bool = False


class ChatCompletionRequest(GenerationFields):
    messages: list[ChatMessage] = Field(min_length=1)
    prompt_cache_key: str | None = Field(None, max_length=1024)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    response_format: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    n: int = Field(1, ge=1)  # at most the gateway's max_choices
    parallel_tool_calls: bool | None = None  # False: at most one call, by the reply's grammar

    def affinity(self, tenant: str) -> str:
        """What keeps a conversation's calls on one worker, whose prefix cache holds it: the caller's
        `prompt_cache_key`, else its opening messages (what every later call of it resends)."""
        return cache_affinity(tenant, self.prompt_cache_key, [part for m in self.messages[:2]
                                                              for part in (m.role, m.content)])

    @model_validator(mode="before")
    @classmethod
    def _refused_fields(cls, body: Any) -> Any:
        return CHAT.refuse(body)

    def check(self, limits: InputLimits) -> None:
        """The request within the gateway's bounds (ValueError otherwise)."""
        limits.check(len(self.messages), [t.function.parameters for t in self.tools or ()], self.schema())

    def effort(self) -> Any:
        return self.reasoning_effort

    def mode(self) -> str:
        return self._chosen_mode or effort_mode(self.reasoning_effort)

    def worker_messages(self, max_depth: int) -> list[Message]:
        return [message.worker_message(i, max_depth) for i, message in enumerate(self.messages)]

    def schema(self) -> dict[str, Any] | None:
        return response_schema(self.response_format)


def effort_mode(effort: Any) -> str:
    if effort is None:
        return "non-think"
    if not isinstance(effort, str) or effort not in EFFORTS:
        raise ValueError(f"reasoning effort: one of {', '.join(EFFORTS)}")
    return EFFORTS[effort]


def text_of(content: Any, where: str = "content") -> str:
    """Message content as text: a string, or text parts joined (other part kinds are refused)."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise ValueError(f"{where}: a string or a list of text parts")
    parts = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in TEXT_PARTS:
            shown = kind if isinstance(kind, str) else type(part).__name__
            raise ValueError(f"{where}[{i}]: content parts of type {shown!r} are not supported (text only)")
        text = part.get("text")
        if not isinstance(text, str | None):
            raise ValueError(f"{where}[{i}].text: a string")
        parts.append(text or "")
    return "".join(parts)


def arguments_object(arguments: str | dict[str, Any] | None, where: str, max_depth: int) -> dict[str, Any]:
    """A tool call's arguments (JSON text or an object) as an object, nested at most `max_depth` deep."""
    try:
        value = load_json(arguments or "{}", f"{where}.arguments", max_depth) if isinstance(arguments, str | None) \
            else arguments
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}.arguments: not JSON ({error.msg})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{where}.arguments: a JSON object")
    return value
