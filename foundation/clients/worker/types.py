"""What callers of the model worker pass and get back: plain dataclasses, so agent code never touches protobuf (the
conversions live in convert.py). Strings stand for the proto enums ("think-high", "batch", "tool_calls") because they
read well in agent code and survive a proto renumbering."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

Mode = Literal["non-think", "think-high", "think-max"]
Priority = Literal["interactive", "batch"]
FinishReason = Literal["stop", "length", "tool_calls", "cancelled", ""]


@dataclass
class ToolCall:
    """A call of a tool: in an assistant message of the history, or streamed by Generate. `arguments` is the parsed
    JSON object (the wire carries it as text)."""

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass
class Message:
    role: str  # system, developer, user, assistant, tool
    content: str = ""
    reasoning_content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str = ""
    name: str = ""


@dataclass
class Tool:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)  # a JSON schema object


@dataclass
class Sampling:
    """Every field None means "the server's default": only the fields set are sent, with explicit presence, so
    `temperature=0.0` (greedy) is distinguishable from unset."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[int, float] | None = None
    seed: int | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    stop_token_ids: list[int] | None = None
    top_logprobs: int | None = None  # alternatives per token, up to 20 (implies logprobs)
    ignore_eos: bool | None = None
    logprobs: bool | None = None  # each token's logprob on its Delta


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)  # (token id, logprob), best first


@dataclass
class Delta:
    """Newly generated text; `reasoning` marks reasoning content rather than the answer."""

    text: str = ""
    reasoning: bool = False
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass
class Usage:
    prompt_tokens: int = 0
    reused_tokens: int = 0
    prefilled_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    session_tokens: int = 0
    session_rebuilt: bool = False
    draft_tokens: int = 0  # speculative decoding: drafts verified, and how many were kept
    accepted_draft_tokens: int = 0


@dataclass
class Final:
    """The last event of a generation. `request_id` is the one the server used (it makes one up when none is sent)."""

    finish_reason: FinishReason
    matched_stop: str = ""
    usage: Usage = field(default_factory=Usage)
    content: str = ""
    reasoning_content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    request_id: str = ""


Event = Delta | ToolCall | Final


@dataclass
class SessionInfo:
    session_id: str
    tokens: int = 0
    commit: int = 0
    commits_retained: list[int] = field(default_factory=list)
    think_max: bool = False
    reused_prefix_tokens: int = 0
    bytes_by_tier: dict[str, int] = field(default_factory=dict)
    parent: str = ""


@dataclass
class ModelInfo:
    model: str
    fingerprint: str = ""
    numerics: str = ""
    vocab_size: int = 0
    max_context: int = 0
    reasoning_modes: list[str] = field(default_factory=list)


@dataclass
class Load:
    waiting_requests: int = 0
    running_requests: int = 0
    kv_bytes_by_tier: dict[str, int] = field(default_factory=dict)
    tokens_per_second: float = 0.0


class GenerateArgs(TypedDict, total=False):
    """The keyword arguments of `generate`, so `generate_text` can forward them and stay typed."""

    session_id: str | None
    messages: Sequence[Message] | None
    token_ids: Sequence[int] | None
    tools: Sequence[Tool] | None
    mode: Mode | None
    sampling: Sampling | None
    tool_choice: str | None
    response_format: dict[str, Any] | str | None
    priority: Priority | None
    request_id: str | None
    commit_every: int | None
    expected_commit: int | None
    timeout: float | None
