"""An agent session's history as worker messages, read from its transcript: what a new worker session is built from
(by compaction, or when the old one is gone). It is read back to the start or to the last summary note, in pages
newest first: O(history), but once per rebuild, not per turn."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent_runtime.store.tables import (
    ASSISTANT,
    SYSTEM_NOTE,
    TOOL_CALL,
    TOOL_RESULT,
    USER,
    AgentSession,
    TranscriptEntry,
)
from agent_runtime.store.transcript import TranscriptStore

Message = dict[str, Any]  # an OpenAI-style chat message, as the worker takes it


@dataclass
class Step:
    """One model step as worker messages: its user input, the reply with its calls, the calls' results."""

    number: int
    first_seq: int
    messages: list[Message]


@dataclass
class History:
    """The steps since the last summary (all of them when there is none). The results of the last step's calls are
    left out: the loop gives them to the model with the next step, on the new session."""

    steps: list[Step]
    summary: str | None = None
    reasoning_chars: int = 0  # reasoning the rebuilt session leaves out
    last_compaction: dict[str, Any] | None = None  # the latest compaction (or rebuild) note's details

    def messages(self) -> list[Message]:
        """The whole history, as a rebuilt session holds it when nothing is compacted."""
        return [*summary_messages(self.summary), *(m for step in self.steps for m in step.messages)]


def read_history(store: TranscriptStore, session: AgentSession, page_size: int = 500) -> History:
    """The transcript back to its start or to the last summary note (and the rows that summary left out)."""
    rows: list[TranscriptEntry] = []
    summary, floor, before, last = None, None, None, None
    while True:
        page = store.page(session.tenant, session.id, before, page_size)
        for row in reversed(page):
            if floor is not None and row.seq < floor:
                return _build_history(rows[::-1], summary, last, session.steps)
            note = row.arguments if row.kind == SYSTEM_NOTE and isinstance(row.arguments, dict) else {}
            if last is None and "compaction" in note:
                last = note
            if summary is None and "summary" in note:
                summary, floor = note["summary"], note["summary_before_seq"]
            rows.append(row)
        if len(page) < page_size:
            return _build_history(rows[::-1], summary, last, session.steps)
        before = page[0].seq


def summary_messages(summary: str | None) -> list[Message]:
    if summary is None:
        return []
    return [{"role": "user", "content": f"[Summary of the earlier conversation, written at compaction]\n{summary}"}]


def _build_history(rows: Sequence[TranscriptEntry], summary: str | None, last_compaction: dict[str, Any] | None,
                   last_step: int) -> History:
    steps: list[Step] = []
    reasoning_chars = 0
    for row in rows:
        if row.kind == SYSTEM_NOTE or (row.kind == TOOL_RESULT and row.step == last_step):
            continue
        if not steps or steps[-1].number != row.step:
            steps.append(Step(row.step, row.seq, []))
        messages = steps[-1].messages
        if row.kind == USER:
            messages.append({"role": "user", "content": row.content})
        elif row.kind == ASSISTANT:
            messages.append({"role": "assistant", "content": row.content})
            reasoning_chars += len(row.reasoning or "")
        elif row.kind == TOOL_CALL:
            if not messages or messages[-1]["role"] != "assistant":
                messages.append({"role": "assistant", "content": ""})
            messages[-1].setdefault("tool_calls", []).append(
                {"id": row.tool_call_id, "type": "function",
                 "function": {"name": row.tool_name, "arguments": row.arguments or {}}})
        elif row.kind == TOOL_RESULT:
            messages.append({"role": "tool", "tool_call_id": row.tool_call_id, "content": row.content})
    return History([s for s in steps if s.messages], summary, reasoning_chars, last_compaction)
