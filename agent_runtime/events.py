"""What a turn streams to its caller, in order: the event dataclasses its clients receive
(foundation/clients/agent/events.py). Every event but a text delta is durable: stored with the turn, so a caller that
reattaches from a cursor, in any runtime process, sees it again."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from foundation.clients.agent.events import (
    EVENT_KINDS,
    USAGE_NAMES,
    ApprovalRequested,
    Compacted,
    JobStatus,
    ModeChosen,
    StepStarted,
    TextDelta,
    ToolFinished,
    ToolStarted,
    TurnDone,
    TurnEvent,
    TurnFailed,
    TurnUsage,
    from_fields,
    kind_of,
)

__all__ = ["EVENT_KINDS", "USAGE_NAMES", "ApprovalRequested", "Compacted", "JobStatus", "ModeChosen", "StepReply",
           "StepStarted", "TextDelta", "ToolFinished", "ToolStarted", "TurnDone", "TurnEvent", "TurnFailed",
           "TurnUsage", "durable", "from_payload", "kind_of", "to_payload"]


@dataclass
class StepReply:
    """What one step of the model wrote (on the worker, or in a Think Max job): internal to the loop."""

    content: str
    reasoning: str
    calls: list
    usage: dict[str, int]
    finish_reason: str  # stop, length, tool_calls, cancelled
    job_session: str | None = None  # the Think Max session a job step left


def durable(event: TurnEvent) -> bool:
    return not isinstance(event, TextDelta)


def to_payload(event: TurnEvent) -> dict[str, Any]:
    return asdict(event)


def from_payload(kind: str, payload: dict[str, Any]) -> TurnEvent:
    return from_fields(kind, payload)
