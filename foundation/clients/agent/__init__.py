"""Typed clients of the agent service, blocking (`AgentClient`) and asyncio (`AsyncAgentClient`): dataclasses in and
out, a turn's events as the dataclasses of events.py (one `match` takes them apart)."""

from foundation.clients.agent.async_client import AsyncAgentClient, AsyncTurnEvents
from foundation.clients.agent.events import (
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
)
from foundation.clients.agent.sync_client import AgentClient, TurnEvents
from foundation.clients.agent.types import AgentSession, SessionPage, Transcript, TranscriptEntry, Turn

__all__ = [
    "AgentClient",
    "AgentSession",
    "ApprovalRequested",
    "AsyncAgentClient",
    "AsyncTurnEvents",
    "Compacted",
    "JobStatus",
    "ModeChosen",
    "SessionPage",
    "StepStarted",
    "TextDelta",
    "ToolFinished",
    "ToolStarted",
    "Transcript",
    "TranscriptEntry",
    "Turn",
    "TurnDone",
    "TurnEvent",
    "TurnEvents",
    "TurnFailed",
    "TurnUsage",
]
