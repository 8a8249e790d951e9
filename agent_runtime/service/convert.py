"""Agent runtime objects to and from protos/dsv4/agent/v1 messages."""

from __future__ import annotations

import json
from typing import Any

from agent_runtime import events as ev
from agent_runtime.store.tables import AgentSession, TranscriptEntry, TurnRecord
from protos.dsv4.agent.v1 import agent_pb2 as pb
from protos.dsv4.worker.v1 import worker_pb2


def stamp(value) -> int:
    return int(value.timestamp()) if value is not None else 0


def usage(values: dict[str, int] | None) -> worker_pb2.Usage:
    return worker_pb2.Usage(**{name: int((values or {}).get(name, 0)) for name in ev.USAGE_NAMES})


def session(row: AgentSession) -> pb.AgentSession:
    return pb.AgentSession(
        session_id=row.id, system_prompt=row.system_prompt, think_max=row.think_max, steps=row.steps,
        entries=row.next_seq, worker_session_id=row.worker_session_id or "", worker_commit=row.worker_commit or 0,
        parent_session_id=row.parent_id or "", active_turn_id=row.active_turn or "",
        created_at=stamp(row.created_at), updated_at=stamp(row.updated_at),
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


def _arguments(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def event(turn_id: str, seq: int, item: ev.TurnEvent) -> pb.TurnEvent:
    message = pb.TurnEvent(turn_id=turn_id, seq=seq)
    match item:
        case ev.ModeChosen():
            message.mode_chosen.CopyFrom(pb.ModeChosen(mode=item.mode, reason=item.reason, via_job=item.via_job))
        case ev.JobStatus():
            message.job_status.CopyFrom(pb.JobStatus(batch_id=item.batch_id, status=item.status, tokens=item.tokens))
        case ev.StepStarted():
            message.step_started.CopyFrom(pb.StepStarted(step=item.step, mode=item.mode))
        case ev.TextDelta():
            message.text_delta.CopyFrom(pb.TextDelta(text=item.text, reasoning=item.reasoning))
        case ev.ToolStarted():
            message.tool_started.CopyFrom(pb.ToolStarted(call_id=item.call_id, name=item.name,
                                                         arguments_json=_arguments(item.arguments)))
        case ev.ApprovalRequested():
            message.approval_requested.CopyFrom(pb.ApprovalRequested(call_id=item.call_id, name=item.name,
                                                                     arguments_json=_arguments(item.arguments)))
        case ev.ToolFinished():
            message.tool_finished.CopyFrom(pb.ToolFinished(call_id=item.call_id, name=item.name,
                                                           content=item.content, is_error=item.is_error,
                                                           status=item.status))
        case ev.Compacted():
            message.compacted.CopyFrom(pb.Compacted(policy=item.policy, tokens_before=item.tokens_before,
                                                    tokens_after=item.tokens_after,
                                                    worker_session_id=item.worker_session_id))
        case ev.TurnDone():
            message.turn_done.CopyFrom(pb.TurnDone(reason=item.reason, content=item.content,
                                                   reasoning=item.reasoning, steps=item.steps,
                                                   usage=usage(item.usage)))
        case ev.TurnFailed():
            message.turn_failed.CopyFrom(pb.TurnFailed(code=item.code, message=item.message))
    return message
