"""What a client sends the agent service, checked at the boundary before anything acts on it: every ID with the one
validator (foundation.ids), every size against a bound from the agent's settings, a turn's inputs as the loop
takes them, its sampling as the worker checks it. Past a bound, or malformed: ValueError (INVALID_ARGUMENT), never an
error from deeper down. (Every string and float the store keeps, no NUL or NaN, is checked before this, for every RPC:
`rpc` in server.py.)"""

from __future__ import annotations

import math
import uuid
from dataclasses import asdict, dataclass, fields

from agent_runtime.loop import Limits
from agent_runtime.service.runs import TurnRequest
from agent_runtime.settings import AgentSettings
from foundation import wire
from foundation.clients.worker import Sampling
from foundation.clients.worker.convert import sampling_from_proto
from foundation.ids import check_id, check_optional_id
from foundation.mode_policy import MODES
from foundation.sampling import SamplingParams
from protos.dsv4.worker.v1 import worker_pb2

_MODES = {worker_pb2.REASONING_MODE_UNSPECIFIED: None, worker_pb2.NON_THINK: MODES[0],
          worker_pb2.THINK_HIGH: MODES[1], worker_pb2.THINK_MAX: MODES[2]}
_DIFFICULTIES = ("", "easy", "normal", "hard")
_TOOL_CHOICES = ("", "auto", "none", "required")
DEFAULT_STEPS = 16
_WORKER_SAMPLING = frozenset(f.name for f in fields(SamplingParams))


@dataclass(frozen=True)
class RequestBounds:
    """The AgentSettings bounds of the same names (their defaults documented there)."""

    max_request_bytes: int = 8 << 20
    max_messages: int = 64
    max_message_bytes: int = 1 << 20
    max_system_prompt_bytes: int = 256 << 10
    max_session_tools: int = 64
    max_session_mcp_servers: int = 8
    max_turn_steps: int = 64

    @classmethod
    def of(cls, settings: AgentSettings) -> RequestBounds:
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})

    def check_size(self, request) -> None:
        if request.ByteSize() > self.max_request_bytes:
            raise ValueError(f"the request is over {self.max_request_bytes} bytes")


@dataclass(frozen=True)
class NewSession:
    session_id: str
    system_prompt: str
    tools: list[str] | None  # None: every offered tool
    mcp_servers: list[str]  # the tenant's MCP servers whose tools join the session (checked against its config later)


def new_session(request, bounds: RequestBounds) -> NewSession:
    """A CreateSession request checked (an empty session ID gets a random one)."""
    bounds.check_size(request)
    session_id = check_optional_id(request.session_id, "session_id") or uuid.uuid4().hex
    if len(request.system_prompt.encode()) > bounds.max_system_prompt_bytes:
        raise ValueError(f"system_prompt: over {bounds.max_system_prompt_bytes} bytes")
    if len(request.tools) > bounds.max_session_tools:
        raise ValueError(f"tools: at most {bounds.max_session_tools}")
    for name in request.tools:
        check_id(name, "tools")
    if len(request.mcp_servers) > bounds.max_session_mcp_servers:
        raise ValueError(f"mcp_servers: at most {bounds.max_session_mcp_servers}")
    for name in request.mcp_servers:
        check_id(name, "mcp_servers")
    if len(set(request.mcp_servers)) < len(request.mcp_servers):
        raise ValueError("mcp_servers: each server once")
    return NewSession(session_id, request.system_prompt, list(request.tools) or None, list(request.mcp_servers))


def turn_request(request, bounds: RequestBounds) -> TurnRequest:
    """A RunTurn request checked and converted (its session and turn IDs checked too)."""
    bounds.check_size(request)
    check_id(request.session_id, "session_id")
    check_optional_id(request.turn_id, "turn_id")
    if request.mode not in _MODES:
        raise ValueError(f"mode: unknown reasoning mode {request.mode}")
    if request.difficulty not in _DIFFICULTIES:
        raise ValueError("difficulty: easy, normal or hard")
    if request.first_tool_choice not in _TOOL_CHOICES:
        check_id(request.first_tool_choice, "first_tool_choice")  # a tool's name
    limits = request.limits
    if limits.max_steps < 0 or limits.max_completion_tokens < 0 or not 0 <= limits.max_seconds < math.inf:
        raise ValueError("limits: not negative, and max_seconds finite")
    if limits.max_steps > bounds.max_turn_steps:
        raise ValueError(f"limits.max_steps: at most {bounds.max_turn_steps}")
    return TurnRequest(
        messages=_user_messages(request.messages, bounds), mode=_MODES[request.mode],
        difficulty=request.difficulty or None,
        limits=Limits(max_steps=limits.max_steps or min(DEFAULT_STEPS, bounds.max_turn_steps),
                      max_completion_tokens=limits.max_completion_tokens or None,
                      max_seconds=limits.max_seconds or None),
        sampling=_sampling(request.sampling) if request.HasField("sampling") else None,
        first_tool_choice=request.first_tool_choice or None, webhook_url=request.webhook_url or None)


def _user_messages(messages, bounds: RequestBounds) -> list[dict]:
    """User messages only (the runtime writes replies, calls and results), checked before they are converted: a
    user message carries text, never calls (whose JSON would be parsed) or results."""
    if len(messages) > bounds.max_messages:
        raise ValueError(f"messages: at most {bounds.max_messages}")
    for i, message in enumerate(messages):
        if message.role != "user":
            raise ValueError("messages: user messages only; the runtime writes the rest (replies, calls, results)")
        if message.tool_calls or message.tool_call_id or message.reasoning_content:
            raise ValueError(f"messages[{i}]: a user message has content only (no tool calls, results or reasoning)")
        if len(message.content.encode()) > bounds.max_message_bytes:
            raise ValueError(f"messages[{i}].content: over {bounds.max_message_bytes} bytes")
    return wire.messages(messages)


def _sampling(message: worker_pb2.SamplingParams) -> Sampling:
    """The turn's sampling, its values checked as the worker checks every request's (foundation/sampling.py:
    ranges, finite numbers; InvalidSamplingParams is a ValueError), so a bad one is refused before the turn starts
    rather than failing its first step. Its sizes (stop strings, token IDs) are the worker's bounds to apply."""
    sampling = sampling_from_proto(message)
    SamplingParams(**{name: value for name, value in asdict(sampling).items()
                      if value is not None and name in _WORKER_SAMPLING})
    return sampling
