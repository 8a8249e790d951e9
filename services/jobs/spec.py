"""What a batch request may say: one line of OpenAI's batch input format, validated at the edge.

    {"custom_id": "q-1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"messages": [...], "tools": [...], "reasoning_effort": "max", "max_tokens": 4096, ...,
              "session_id": "optional: a model worker session to continue"}}

`reasoning_effort` (or `mode`) picks the reasoning mode; Think Max is the default. A valid line becomes a `JobRequest`
(the form stored with the request); an invalid one is reported with its line number and the rest still run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from model_worker.chat import ChatFormatError
from model_worker.chat.messages import prepare_messages

MAX_CUSTOM_ID = 512
# OpenAI's reasoning_effort values, and this platform's mode names, to the worker's modes.
MODES = {"max": "think-max", "high": "think-high", "medium": "think-high", "low": "non-think", "minimal": "non-think",
         "none": "non-think", "think-max": "think-max", "think-high": "think-high", "non-think": "non-think"}
THINK_MAX_QUEUE, DEFAULT_QUEUE = "think_max", "default"
SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "frequency_penalty", "presence_penalty", "seed",
                   "max_tokens", "stop")


class InvalidLine(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line, self.message = line, message


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
    top_k: int | None = None
    min_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
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
    def queue(self) -> str:
        """Think Max runs go to the queue served by GPU-backed workers."""
        return THINK_MAX_QUEUE if self.mode == "think-max" else DEFAULT_QUEUE

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRequest:
        return cls(**data)


def parse_line(raw: str | dict[str, Any], line: int) -> JobRequest:
    """One input line (JSON text or an already parsed object) as a JobRequest; raises InvalidLine."""
    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
        parsed = _Line.model_validate(data)
    except json.JSONDecodeError as exc:
        raise InvalidLine(line, f"not JSON ({exc.msg})") from None
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
    sampling = {name: getattr(body, name) for name in SAMPLING_FIELDS if getattr(body, name) is not None}
    if body.max_completion_tokens is not None:
        sampling["max_tokens"] = body.max_completion_tokens
    if isinstance(sampling.get("stop"), str):
        sampling["stop"] = [sampling["stop"]]
    choice = body.tool_choice
    if isinstance(choice, dict):  # {"type": "function", "function": {"name": ...}}
        choice = (choice.get("function") or {}).get("name")
        if not choice:
            raise InvalidLine(line, "body.tool_choice: name the function")
    return JobRequest(parsed.custom_id, body.messages, MODES[mode_name], body.tools, choice, body.response_format,
                      sampling, body.session_id)


def parse_jsonl(text: str) -> tuple[list[tuple[int, JobRequest]], list[InvalidLine]]:
    """(valid requests with their line numbers, invalid lines) of a JSONL file; blank lines are skipped."""
    return collect((number, parse_line, raw) for number, raw in enumerate(text.splitlines(), start=1)
                   if raw.strip())


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
