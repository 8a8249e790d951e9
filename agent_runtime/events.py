"""What a turn streams to its caller, in order. Every event but a text delta is durable: stored with the turn, so a
caller that reattaches from a cursor, in any runtime process, sees it again."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# The usage a turn reports (TurnDone.usage), summed over its steps: the worker's counters of the same names.
USAGE_NAMES = ("prompt_tokens", "prefilled_tokens", "reused_tokens", "completion_tokens", "reasoning_tokens")


@dataclass
class ModeChosen:
    mode: str
    reason: str
    via_job: bool


@dataclass
class JobStatus:
    batch_id: str
    status: str  # queued, running, completed, failed...
    tokens: int


@dataclass
class StepStarted:
    step: int
    mode: str


@dataclass
class TextDelta:
    text: str
    reasoning: bool


@dataclass
class ToolStarted:
    call_id: str
    name: str
    arguments: Any


@dataclass
class ApprovalRequested:
    """The call waits for a human's decision (AgentService.Decide); the turn is paused until then."""

    call_id: str
    name: str
    arguments: Any


@dataclass
class ToolFinished:
    call_id: str
    name: str
    content: str
    is_error: bool
    status: str  # finished, interrupted, rejected


@dataclass
class StepReply:
    """What one step of the model wrote (on the worker, or in a Think Max job): internal to the loop."""

    content: str
    reasoning: str
    calls: list
    usage: dict[str, int]
    finish_reason: str  # stop, length, tool_calls, cancelled
    job_session: str | None = None  # the Think Max session a job step left


@dataclass
class Compacted:
    """The worker session was rebuilt from a compacted history; the transcript keeps everything. Also sent when a
    lost worker session (expired or deleted) was rebuilt from the transcript: policy `rebuild` or `rebuild+<policy>`,
    tokens_before 0."""

    policy: str
    tokens_before: int
    tokens_after: int
    worker_session_id: str


@dataclass
class TurnDone:
    # answer; length: the last step hit its token limit before it ended (content: its text before any call it was
    # writing); step_limit, token_budget, time_budget, cancelled
    reason: str
    content: str
    reasoning: str
    steps: int
    usage: dict[str, int] = field(default_factory=dict)


@dataclass
class TurnFailed:
    """The turn stopped on an error (its status code name and message); the transcript keeps its finished steps."""

    code: str
    message: str


TurnEvent = (ModeChosen | JobStatus | StepStarted | TextDelta | ToolStarted | ApprovalRequested | ToolFinished
             | Compacted | TurnDone | TurnFailed)
EVENT_KINDS: dict[str, type] = {
    "mode_chosen": ModeChosen, "job_status": JobStatus, "step_started": StepStarted, "text_delta": TextDelta,
    "tool_started": ToolStarted, "approval_requested": ApprovalRequested, "tool_finished": ToolFinished,
    "compacted": Compacted, "turn_done": TurnDone, "turn_failed": TurnFailed}
_KIND_OF = {cls: kind for kind, cls in EVENT_KINDS.items()}


def kind_of(event: TurnEvent) -> str:
    return _KIND_OF[type(event)]


def durable(event: TurnEvent) -> bool:
    return not isinstance(event, TextDelta)


def to_payload(event: TurnEvent) -> dict[str, Any]:
    return asdict(event)


def from_payload(kind: str, payload: dict[str, Any]) -> TurnEvent:
    return EVENT_KINDS[kind](**payload)
