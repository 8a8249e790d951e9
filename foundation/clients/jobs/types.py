"""What the jobs service's typed clients take and return: plain dataclasses with the proto's field names (convert.py
maps them), times as Unix seconds (0: not yet)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from foundation.clients.worker.types import Message, Mode, Sampling, Tool, Usage


@dataclass
class JobRequest:
    """One request of a batch. `mode` None: Think Max; `session_id` continues that model worker session (on a copy:
    the batch never changes it); `tool_choice` "auto", "none", "required" or a tool's name; `response_format` a JSON
    schema the reply follows."""

    custom_id: str
    messages: list[Message] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    mode: Mode | None = None
    sampling: Sampling | None = None
    tool_choice: str | None = None
    response_format: dict[str, Any] | str | None = None
    session_id: str = ""


@dataclass
class RequestCounts:
    total: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    expired: int = 0
    queued: int = 0
    running: int = 0


@dataclass
class InvalidLine:
    line: int
    message: str


@dataclass
class Batch:
    id: str
    status: str  # validating, in_progress, finalizing, completed, failed, expired, cancelling, cancelled
    request_counts: RequestCounts = field(default_factory=RequestCounts)
    errors: list[InvalidLine] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    created_at: int = 0
    in_progress_at: int = 0
    finalizing_at: int = 0
    completed_at: int = 0
    failed_at: int = 0
    expired_at: int = 0
    cancelling_at: int = 0
    cancelled_at: int = 0
    expires_at: int = 0


@dataclass
class BatchPage:
    batches: list[Batch]
    has_more: bool  # pass the last batch's ID as `after` for the next page


@dataclass
class ResultLine:
    custom_id: str
    status: str  # completed, failed, cancelled, expired
    response_json: str = ""  # an OpenAI chat.completion object (partial when cancelled); empty when none
    error_code: str = ""
    error_message: str = ""
    usage: Usage = field(default_factory=Usage)


@dataclass
class RequestProgress:
    custom_id: str
    status: str
    phase: str  # queued, prefill, decode, done
    tokens: int = 0
    attempts: int = 0
