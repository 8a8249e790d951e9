"""The agent service's messages (protos/dsv4/agent/v1) to and from the clients' dataclasses. Events go both ways:
the runtime sends the same dataclasses its clients get back."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any

from foundation.clients.agent import events as ev
from foundation.clients.agent.types import AgentSession, SessionPage, Transcript, TranscriptEntry, Turn
from foundation.clients.worker.convert import tool_from_proto
from foundation.clients.worker.errors import ProtocolError
from protos.dsv4.agent.v1 import agent_pb2 as pb
from protos.dsv4.worker.v1 import worker_pb2

MODES = {None: worker_pb2.REASONING_MODE_UNSPECIFIED, "non-think": worker_pb2.NON_THINK,
         "think-high": worker_pb2.THINK_HIGH, "think-max": worker_pb2.THINK_MAX}
_ARGUMENT_EVENTS = (ev.ToolStarted, ev.ApprovalRequested)  # `arguments` travels as JSON text


def usage_to_proto(usage: ev.TurnUsage) -> worker_pb2.Usage:
    return worker_pb2.Usage(**asdict(usage))


def usage_from_proto(msg: worker_pb2.Usage) -> ev.TurnUsage:
    return ev.TurnUsage(**{name: getattr(msg, name) for name in ev.USAGE_NAMES})


def _arguments_json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _arguments(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:  # what the model wrote was not JSON: the text as written
        return text


def event_to_proto(turn_id: str, seq: int, event: ev.TurnEvent) -> pb.TurnEvent:
    values = {f.name: getattr(event, f.name) for f in fields(event)}
    if isinstance(event, _ARGUMENT_EVENTS):
        values["arguments_json"] = _arguments_json(values.pop("arguments"))
    if isinstance(event, ev.TurnDone):
        values["usage"] = usage_to_proto(event.usage)
    kind = ev.kind_of(event)
    message_class = getattr(pb, type(event).__name__)
    return pb.TurnEvent(turn_id=turn_id, seq=seq, **{kind: message_class(**values)})


def event_from_proto(message: pb.TurnEvent) -> ev.TurnEvent:
    kind = message.WhichOneof("event")
    if kind is None:
        raise ProtocolError(f"turn event {message.seq} of {message.turn_id} carries no event")
    body = getattr(message, kind)
    values = {field.name: getattr(body, field.name) for field in body.DESCRIPTOR.fields}
    if "arguments_json" in values:
        values["arguments"] = _arguments(values.pop("arguments_json"))
    if kind == "turn_done":
        values["usage"] = asdict(usage_from_proto(body.usage))
    return ev.from_fields(kind, values)


def session_from_proto(msg: pb.AgentSession) -> AgentSession:
    return AgentSession(
        session_id=msg.session_id, system_prompt=msg.system_prompt, tools=[tool_from_proto(t) for t in msg.tools],
        mcp_servers=list(msg.mcp_servers), think_max=msg.think_max, steps=msg.steps, entries=msg.entries,
        worker_session_id=msg.worker_session_id, worker_commit=msg.worker_commit,
        parent_session_id=msg.parent_session_id, active_turn_id=msg.active_turn_id, created_at=msg.created_at,
        updated_at=msg.updated_at)


def session_page_from_proto(msg: pb.ListSessionsResponse) -> SessionPage:
    return SessionPage([session_from_proto(s) for s in msg.sessions], msg.has_more)


def transcript_from_proto(msg: pb.Transcript) -> Transcript:
    return Transcript([TranscriptEntry(
        seq=e.seq, step=e.step, kind=e.kind, content=e.content, reasoning=e.reasoning, tool_call_id=e.tool_call_id,
        tool_name=e.tool_name, arguments=_arguments(e.arguments_json), call_status=e.call_status,
        is_error=e.is_error, created_at=e.created_at) for e in msg.entries], msg.next_before)


def turn_from_proto(msg: pb.Turn) -> Turn:
    return Turn(
        turn_id=msg.turn_id, session_id=msg.session_id, status=msg.status, mode=msg.mode,
        mode_reason=msg.mode_reason, via_job=msg.via_job, stop_reason=msg.stop_reason, content=msg.content,
        usage=usage_from_proto(msg.usage), error=msg.error, next_seq=msg.next_seq, created_at=msg.created_at,
        ended_at=msg.ended_at)
