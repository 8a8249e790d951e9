"""The agent runtime's rows as protos/dsv4/agent/v1 messages (its events go out by the clients' own conversion,
foundation/clients/agent/convert.py, which reads them back)."""

from __future__ import annotations

import json

from agent_runtime.store.tables import AgentSession, TranscriptEntry, TurnRecord
from agent_runtime.tools.mcp_config import mcp_servers_of
from foundation.clients.agent.convert import usage_to_proto
from foundation.clients.agent.events import TurnUsage
from protos.dsv4.agent.v1 import agent_pb2 as pb
from protos.dsv4.worker.v1 import worker_pb2


def stamp(value) -> int:
    return int(value.timestamp()) if value is not None else 0


def usage(values: dict[str, int] | None) -> worker_pb2.Usage:
    return usage_to_proto(TurnUsage.of(values))


def session(row: AgentSession) -> pb.AgentSession:
    return pb.AgentSession(
        session_id=row.id, system_prompt=row.system_prompt, think_max=row.think_max, steps=row.steps,
        entries=row.next_seq, worker_session_id=row.worker_session_id or "", worker_commit=row.worker_commit or 0,
        parent_session_id=row.parent_id or "", active_turn_id=row.active_turn or "",
        created_at=stamp(row.created_at), updated_at=stamp(row.updated_at), mcp_servers=mcp_servers_of(row.tools),
        tools=[worker_pb2.Tool(name=t["function"]["name"], description=t["function"].get("description", ""),
                               parameters_json=json.dumps(t["function"].get("parameters") or {}))
               for t in row.tools])


def entry(row: TranscriptEntry) -> pb.TranscriptEntry:
    return pb.TranscriptEntry(
        seq=row.seq, step=row.step, kind=row.kind, content=row.content, reasoning=row.reasoning or "",
        tool_call_id=row.tool_call_id or "", tool_name=row.tool_name or "",
        arguments_json=json.dumps(row.arguments) if row.arguments is not None else "",
        call_status=row.call_status or "", is_error=row.is_error, created_at=stamp(row.created_at))


def turn(row: TurnRecord) -> pb.Turn:
    return pb.Turn(turn_id=row.id, session_id=row.session_id, status=row.status, mode=row.mode or "",
                   mode_reason=row.mode_reason or "", via_job=row.via_job, stop_reason=row.stop_reason or "",
                   content=row.content, usage=usage(row.usage), error=row.error or "", next_seq=row.next_event,
                   created_at=stamp(row.created_at), ended_at=stamp(row.ended_at))
