"""What the agent service's typed clients return: plain dataclasses with the proto's field names (convert.py maps
them), times as Unix seconds (0: not yet)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from foundation.clients.agent.events import TurnUsage
from foundation.clients.worker.types import Tool


@dataclass
class AgentSession:
    session_id: str
    system_prompt: str = ""
    tools: list[Tool] = field(default_factory=list)
    mcp_servers: list[str] = field(default_factory=list)
    think_max: bool = False
    steps: int = 0
    entries: int = 0  # transcript entries, forks' shared history included
    worker_session_id: str = ""
    worker_commit: int = 0
    parent_session_id: str = ""  # forks
    active_turn_id: str = ""
    created_at: int = 0
    updated_at: int = 0


@dataclass
class SessionPage:
    sessions: list[AgentSession]
    has_more: bool  # pass the last session's ID as `after` for the next page


@dataclass
class TranscriptEntry:
    seq: int
    step: int
    kind: str  # user, assistant, tool_call, tool_result, note
    content: str = ""
    reasoning: str = ""
    tool_call_id: str = ""
    tool_name: str = ""
    arguments: Any = None  # a tool call's parsed arguments
    call_status: str = ""  # tool calls: started, awaiting, approved, rejected, finished, interrupted
    is_error: bool = False
    created_at: int = 0


@dataclass
class Transcript:
    entries: list[TranscriptEntry]
    next_before: int  # pass as `before` for the previous page; 0: this page reached the start


@dataclass
class Turn:
    turn_id: str
    session_id: str
    status: str  # running, awaiting_approval, done, failed, cancelled, interrupted
    mode: str = ""
    mode_reason: str = ""
    via_job: bool = False
    stop_reason: str = ""  # answer, length, step_limit, token_budget, time_budget, cancelled
    content: str = ""
    usage: TurnUsage = field(default_factory=TurnUsage)
    error: str = ""
    next_seq: int = 0
    created_at: int = 0
    ended_at: int = 0
