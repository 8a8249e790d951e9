"""What a batch request may say: one line of OpenAI's batch input format, validated at the edge.

    {"custom_id": "q-1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"messages": [...], "tools": [...], "reasoning_effort": "max", "max_tokens": 4096, ...,
              "session_id": "optional: a model worker session to continue"}}

`reasoning_effort` (or `mode`) picks the reasoning mode; Think Max is the default. A valid line becomes a `JobRequest`
(the form stored with the request); an invalid one is reported with its line number and the rest still run.

A batch is bounded (`BatchLimits`, the service's settings): past its count of requests or its bytes it is refused
whole (BatchTooLarge, RESOURCE_EXHAUSTED) before any line is parsed; a line past its own bytes is reported invalid
unread, and each line's JSON, messages, tools and schemas are held to the bounds the gateway applies (`InputLimits`),
its text and numbers to what the store keeps (foundation/storable.py: no NUL, no NaN).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from foundation.chat import ChatFormatError
from foundation.chat.messages import prepare_messages, tool_schema
from foundation.ids import check_id
from foundation.storable import Unstorable, check_json
from services.openai_shapes import (
    MODES,
    InputLimits,
    TooDeep,
    cache_affinity,
    check_depth,
    load_json,
    response_schema,
    tool_choice_name,
)

MAX_CUSTOM_ID = 512
THINK_MAX_QUEUE, DEFAULT_QUEUE = "think_max", "default"
INT32_MAX, UINT64_MAX = 2**31 - 1, 2**64 - 1
SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "frequency_penalty", "presence_penalty", "seed",
                   "max_tokens", "stop")


class InvalidLine(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line, self.message = line, message


class BatchTooLarge(Exception):
    """A batch past its count of requests or its bytes (RESOURCE_EXHAUSTED; HTTP 413 through the gateway)."""


@dataclass(frozen=True)
class BatchLimits:
    """What one batch may hold; `JobsSettings` has them as settings, defaults as here."""

    max_requests: int = 50_000
    max_bytes: int = 200 << 20
    max_request_bytes: int = 8 << 20  # one JSONL line, or one typed request as serialized
    input: InputLimits = InputLimits()

    def check_batch(self, requests: int, size: int) -> None:
        if requests > self.max_requests:
            raise BatchTooLarge(f"the batch has {requests} requests, more than the {self.max_requests} one may have")
        if size > self.max_bytes:
            raise BatchTooLarge(f"the batch is {size} bytes, over the {self.max_bytes} one may have")

    def check_request(self, size: int, line: int) -> None:
        if size > self.max_request_bytes:
            raise InvalidLine(line, f"{size} bytes, over the {self.max_request_bytes} a request may have")


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI fields this platform ignores (model, n=1, user...) are let be

    messages: list[dict[str, Any]] = Field(min_length=1)
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    mode: str | None = None
    session_id: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = Field(default=None, ge=0, le=INT32_MAX)  # the worker's wire types bound them
    min_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = Field(default=None, ge=0, le=UINT64_MAX)
    max_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    stop: str | list[str] | None = None
    n: int = 1

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("n: one choice per request")
        return n


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid")

    custom_id: str = Field(min_length=1, max_length=MAX_CUSTOM_ID)
    method: Literal["POST"] = "POST"
    url: Literal["/v1/chat/completions"] = "/v1/chat/completions"
    body: _Body


@dataclass
class JobRequest:
    """A validated request as stored and run: OpenAI-shaped messages and tools, the worker's mode names."""

    custom_id: str
    messages: list[dict[str, Any]]
    mode: str = "think-max"
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str | None = None
    response_format: dict[str, Any] | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    session_id: str | None = None

    @property
    def affinity(self) -> str:
        """Where the line goes (WorkerPool.route): by its first two messages, where lines of one batch put what they
        share (a document, instructions), so lines that share them go to one worker, whose prefix cache computes it
        once."""
        return cache_affinity("", None, [part for m in self.messages[:2] for part in (m.get("role"), m.get("content"))])

    @property
    def queue(self) -> str:
        """Think Max runs go to the queue served by GPU-backed workers."""
        return THINK_MAX_QUEUE if self.mode == "think-max" else DEFAULT_QUEUE

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRequest:
        return cls(**data)


def parse_line(raw: str | dict[str, Any], line: int, limits: BatchLimits = BatchLimits()) -> JobRequest:
    """One input line (JSON text or an already parsed object) as a JobRequest; raises InvalidLine."""
    try:
        if isinstance(raw, str):
            limits.check_request(len(raw.encode()), line)
        depth = limits.input.max_json_depth
        data = load_json(raw, "the line", depth) if isinstance(raw, str) else \
            check_json(check_depth(raw, depth, "the line"), "the line")
        parsed = _Line.model_validate(data)
    except json.JSONDecodeError as exc:
        raise InvalidLine(line, f"not JSON ({exc.msg})") from None
    except (TooDeep, Unstorable) as exc:
        raise InvalidLine(line, str(exc)) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidLine(line, f"{where}: {first['msg']}") from None
    body = parsed.body
    mode_name = body.mode or body.reasoning_effort or "think-max"
    if mode_name not in MODES:
        raise InvalidLine(line, f"reasoning_effort: unknown value {mode_name!r} (one of {', '.join(MODES)})")
    try:
        prepare_messages(body.messages)
    except ChatFormatError as exc:
        raise InvalidLine(line, f"body.messages: {exc}") from None
    try:
        tools = [tool_schema(tool, f"body.tools[{i}]") for i, tool in enumerate(body.tools)]
        parameters = [tool.get("parameters") for tool in tools]
        if not all(isinstance(p, dict | None) for p in parameters):
            raise ValueError("body.tools: each tool's parameters is a JSON schema object")
        schema = response_schema(body.response_format)
        limits.input.check(len(body.messages), parameters, schema)
        # With a session and no tools of its own the request uses the session's, which the worker checks.
        choice = tool_choice_name(body.tool_choice, [t["name"] for t in tools] if tools or not body.session_id
                                  else None)
        session_id = check_id(body.session_id, "body.session_id") if body.session_id is not None else None
    except (ChatFormatError, ValueError) as exc:  # InvalidId among them
        raise InvalidLine(line, str(exc)) from None
    sampling = {name: getattr(body, name) for name in SAMPLING_FIELDS if getattr(body, name) is not None}
    if body.max_completion_tokens is not None:
        sampling["max_tokens"] = body.max_completion_tokens
    if isinstance(sampling.get("stop"), str):
        sampling["stop"] = [sampling["stop"]]
    return JobRequest(parsed.custom_id, body.messages, MODES[mode_name], body.tools, choice, schema, sampling,
                      session_id)


def parse_jsonl(text: str, limits: BatchLimits = BatchLimits()) -> tuple[list[tuple[int, JobRequest]],
                                                                         list[InvalidLine]]:
    """(valid requests with their line numbers, invalid lines) of a JSONL file; blank lines are skipped. A batch
    past its bounds raises BatchTooLarge before any line is parsed."""
    lines = [(number, raw) for number, raw in enumerate(text.splitlines(), start=1) if raw.strip()]
    # Characters never outnumber UTF-8 bytes: text with more characters than the bound is over it unencoded.
    limits.check_batch(len(lines), len(text) if len(text) > limits.max_bytes else len(text.encode()))
    return collect((number, lambda raw, n: parse_line(raw, n, limits), raw) for number, raw in lines)


def collect(items: Iterable[tuple[int, Callable[[Any, int], JobRequest], Any]]
            ) -> tuple[list[tuple[int, JobRequest]], list[InvalidLine]]:
    """Validate (line, parser, raw) items, whatever their form (JSONL lines, typed requests): (valid requests with
    their line numbers, invalid lines). A repeated custom_id is invalid from its second occurrence on."""
    valid: list[tuple[int, JobRequest]] = []
    invalid: list[InvalidLine] = []
    seen: set[str] = set()
    for number, parse, raw in items:
        try:
            request = parse(raw, number)
        except InvalidLine as exc:
            invalid.append(exc)
            continue
        if request.custom_id in seen:
            invalid.append(InvalidLine(number, f"custom_id {request.custom_id!r} repeats an earlier request"))
            continue
        seen.add(request.custom_id)
        valid.append((number, request))
    return valid, invalid
