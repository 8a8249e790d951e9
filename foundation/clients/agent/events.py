"""What a turn streams, in order: one set of dataclasses for the agent runtime that emits them and the clients that
receive them, so a caller takes a turn apart with `match`:

    for event in client.run_turn("s1", "What is 2 + 2?"):
        match event:
            case TextDelta(text=text, reasoning=False):
                print(text, end="")
            case ApprovalRequested(call_id=call_id, name=name):
                client.decide("s1", call_id, approve=name != "delete_everything")
            case TurnDone(reason=reason, usage=usage):
                print(reason, usage.completion_tokens)
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

# The usage a turn reports, summed over its steps: the worker's counters of the same names.
USAGE_NAMES = ("prompt_tokens", "prefilled_tokens", "reused_tokens", "completion_tokens", "reasoning_tokens")


@dataclass
class TurnUsage:
    prompt_tokens: int = 0
    prefilled_tokens: int = 0
    reused_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0

    @classmethod
    def of(cls, values: dict[str, int] | None) -> TurnUsage:
        """From a mapping of the counters (missing ones 0, others ignored)."""
        return cls(**{name: int((values or {}).get(name, 0)) for name in USAGE_NAMES})


@dataclass
class ModeChosen:
    mode: str  # non-think, think-high, think-max
    reason: str
    via_job: bool  # Think Max through the jobs service


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
    arguments: Any  # the parsed JSON the model wrote (usually an object)


@dataclass
class ApprovalRequested:
    """The call waits for a human's decision (`decide`); the turn is paused until then."""

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
    usage: TurnUsage = field(default_factory=TurnUsage)


@dataclass
class TurnFailed:
    """The turn stopped on an error (its status code name and message); the transcript keeps its finished steps."""

    code: str
    message: str


TurnEvent = (ModeChosen | JobStatus | StepStarted | TextDelta | ToolStarted | ApprovalRequested | ToolFinished
             | Compacted | TurnDone | TurnFailed)
# The proto's oneof names, which the runtime also stores each event under.
EVENT_KINDS: dict[str, type] = {
    "mode_chosen": ModeChosen, "job_status": JobStatus, "step_started": StepStarted, "text_delta": TextDelta,
    "tool_started": ToolStarted, "approval_requested": ApprovalRequested, "tool_finished": ToolFinished,
    "compacted": Compacted, "turn_done": TurnDone, "turn_failed": TurnFailed}
_KIND_OF = {cls: kind for kind, cls in EVENT_KINDS.items()}


def kind_of(event: TurnEvent) -> str:
    return _KIND_OF[type(event)]


def from_fields(kind: str, values: dict[str, Any]) -> TurnEvent:
    """The event of `kind` from its fields' values (a TurnDone's usage as a mapping); unknown names are dropped, so
    an event stored by a newer runtime still reads."""
    cls = EVENT_KINDS[kind]
    known = {f.name for f in fields(cls)}
    values = {name: value for name, value in values.items() if name in known}
    if cls is TurnDone:
        values["usage"] = TurnUsage.of(values.get("usage"))
    return cls(**values)
