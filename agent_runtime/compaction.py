"""Context compaction: when an agent's worker session nears the model's context limit, a policy compacts the history
(old tool results cleared, or the older steps summarized by the model) and a new worker session is built from it.
The transcript keeps every row; a note records each compaction. Building the history reads the transcript back to
its start (or to the last summary): O(history), but once per context fill, not per turn."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent_runtime.events import Compacted
from agent_runtime.store.models import (
    ASSISTANT,
    SYSTEM_NOTE,
    TOOL_CALL,
    TOOL_RESULT,
    USER,
    AgentSession,
    TranscriptEntry,
)
from agent_runtime.store.transcript import Entry, TranscriptStore
from model_worker.client import AlreadyExists, Sampling, SessionInfo, Tool, WorkerClient
from model_worker.registry import WorkerPool

Message = dict[str, Any]  # an OpenAI-style chat message, as the worker takes it
_MAX_ID, _ID_ATTEMPTS = 128, 8  # the worker's longest session ID; taken IDs skipped before giving up


@dataclass
class Step:
    """One model step as worker messages: its user input, the reply with its calls, the calls' results."""

    number: int
    first_seq: int
    messages: list[Message]


@dataclass
class History:
    """What a policy compacts: the steps since the last summary (all of them when there is none). The results of the
    last step's calls are left out: the loop gives them to the model with the next step, on the new session."""

    steps: list[Step]
    summary: str | None = None
    reasoning_chars: int = 0  # reasoning the rebuilt session leaves out
    last_compaction: dict[str, Any] | None = None  # the latest compaction note's details


@dataclass
class CompactedHistory:
    messages: list[Message]
    what: str  # what was done, for the model and the note: "3 older tool results cleared"
    summary: str | None = None
    summary_before_seq: int | None = None  # the first transcript row the summary does not cover


class CompactionPolicy(ABC):
    name: str

    @abstractmethod
    def compact(self, history: History, client: WorkerClient) -> CompactedHistory | None:
        """The messages a new worker session is built from, or None when there is nothing to make smaller."""


@dataclass
class ClearToolResults(CompactionPolicy):
    """Every tool result but the last `keep_last` replaced by a placeholder saying how long it was; the rest kept."""

    keep_last: int = 8
    name = "clear_tool_results"

    def compact(self, history: History, client: WorkerClient) -> CompactedHistory | None:
        total = sum(m["role"] == "tool" for step in history.steps for m in step.messages)
        clear_up_to, seen, cleared = total - self.keep_last, 0, 0
        messages = _summary_messages(history.summary)
        for message in (m for step in history.steps for m in step.messages):
            if message["role"] == "tool":
                seen += 1
                placeholder = f"[tool result cleared by compaction: {len(message['content']):,} characters]"
                if seen <= clear_up_to and len(placeholder) < len(message["content"]):
                    message, cleared = {**message, "content": placeholder}, cleared + 1
            messages.append(message)
        if not cleared and not history.reasoning_chars:
            return None
        return CompactedHistory(messages, f"{cleared} older tool results cleared")


_SUMMARY_REQUEST = (
    "Summarize the conversation below for the assistant that will continue it without seeing it: the user's goals "
    "and instructions, what was done and decided, the facts learned from tool results (names, numbers, paths, "
    "errors), and what is still open. Be concise and specific.")


@dataclass
class Summarize(CompactionPolicy):
    """All but the last `keep_last_steps` steps summarized by the model (a stateless non-think request, greedy, at
    most `max_tokens`); the summary, then those steps verbatim. Tool results are cut to `max_result_chars` in the
    text the model summarizes, so the request stays well inside the context that is being relieved."""

    keep_last_steps: int = 2
    max_tokens: int = 1024
    max_result_chars: int = 2000
    name = "summarize"

    def __post_init__(self) -> None:
        if self.keep_last_steps < 1:
            raise ValueError("keep_last_steps: at least 1, so the last step's calls stay beside their results")

    def compact(self, history: History, client: WorkerClient) -> CompactedHistory | None:
        older, kept = history.steps[:-self.keep_last_steps], history.steps[-self.keep_last_steps:]
        if not older:
            return None
        request = [_SUMMARY_REQUEST]
        if history.summary:
            request.append(f"Summary of what came before:\n{history.summary}")
        request.append("Conversation:\n" + "\n".join(self._line(m) for step in older for m in step.messages))
        final, text = client.generate_text(messages=[{"role": "user", "content": "\n\n".join(request)}],
                                           mode="non-think",
                                           sampling=Sampling(temperature=0.0, max_tokens=self.max_tokens))
        summary = (text or final.content).strip() or "(the model gave no summary)"
        messages = [*_summary_messages(summary), *(m for step in kept for m in step.messages)]
        return CompactedHistory(messages, f"steps {older[0].number}-{older[-1].number} summarized", summary,
                                kept[0].first_seq)

    def _line(self, message: Message) -> str:
        if message["role"] == "user":
            return f"User: {message['content']}"
        if message["role"] == "tool":
            content = message["content"]
            if len(content) > self.max_result_chars:
                rest = len(content) - self.max_result_chars
                content = f"{content[:self.max_result_chars]}... [{rest:,} more characters]"
            return f"Result of call {message['tool_call_id']}: {content}"
        calls = [f"\nAssistant called {c['function']['name']} with {json.dumps(c['function']['arguments'])} "
                 f"(call {c['id']})" for c in message.get("tool_calls", ())]
        return f"Assistant: {message['content']}" + "".join(calls)


@dataclass
class Compaction:
    """When to compact and how. `trigger_tokens`: compact when the worker session is longer; None means
    `trigger_fraction` of the model's context (asked of the worker once)."""

    policy: CompactionPolicy = field(default_factory=ClearToolResults)
    trigger_tokens: int | None = None
    trigger_fraction: float = 0.85


class Compactor:
    """The loop's compaction hook: rebuilds an agent's worker session from a compacted history once it is longer
    than the trigger, on the worker that serves it, and points the agent session at the new one."""

    def __init__(self, store: TranscriptStore, workers: WorkerPool[WorkerClient] | WorkerClient,
                 settings: Compaction | None = None, page_size: int = 500) -> None:
        self.store, self.settings, self.page_size = store, settings or Compaction(), page_size
        self.workers = workers if isinstance(workers, WorkerPool) else WorkerPool.of(workers)
        self._trigger = self.settings.trigger_tokens

    def maybe_compact(self, tenant: str, session: AgentSession, context_tokens: int) -> Compacted | None:
        address, client = self.workers.connect(session.worker_session_id, hint=session.worker_address)
        if self._trigger is None:
            self._trigger = int(self.settings.trigger_fraction * client.model_info().max_context)
        if context_tokens <= self._trigger:
            return None
        policy, history = self.settings.policy, self._history(session)
        compacted = policy.compact(history, client)
        if compacted is None:  # the context is all recent steps: tried again next turn
            return None
        old, last = session.worker_session_id, history.last_compaction
        # Numbered from the compaction that made the current worker session (agent-x, agent-x-c1, agent-x-c2...).
        base, number = (last["id_base"], last["compaction"] + 1) if last and last["worker_session_id"] == old \
            else (old, 1)
        created, number = self._create_worker_session(client, base, number, session,
                                                      client.get_session(old).think_max)
        # One append in non-think mode: earlier assistant turns render as the V4 encoder renders turns before the
        # last user message (reasoning dropped, `</think>` then the answer). An append must end with a user-side
        # message; the notice is that message, so the model also learns why the older context looks as it does.
        # The loop's next Generate closes the turn it opens with an empty reply (the worker's rule for a turn that
        # got none) and then adds its input.
        notice = {"role": "developer", "content": f"[Context compacted: {compacted.what}. The conversation "
                                                  "continues from here.]"}
        info = client.append(created.session_id, [*compacted.messages, notice], mode="non-think",
                             expected_commit=created.commit)
        # The old worker session is left in place: forks and recovery of earlier steps still start from it.
        self.workers.placed(info.session_id, address)
        self.store.set_worker(tenant, session.id, info.session_id, info.commit, address)
        details = {"compaction": number, "id_base": base, "policy": policy.name,
                   "tokens_before": context_tokens, "tokens_after": info.tokens, "worker_session_id": info.session_id,
                   "previous_worker_session_id": old}
        if compacted.summary is not None:
            details |= {"summary": compacted.summary, "summary_before_seq": compacted.summary_before_seq}
        # After the switch: a crash in between loses only the note (the next compaction then reads further back).
        self.store.append_note(tenant, session.id, Entry(
            SYSTEM_NOTE, f"compacted by {policy.name} ({compacted.what}): {context_tokens} -> {info.tokens} tokens, "
                         f"now on worker session {info.session_id}", arguments=details))
        return Compacted(policy.name, context_tokens, info.tokens, info.session_id)

    @staticmethod
    def _create_worker_session(client: WorkerClient, base: str, number: int, session: AgentSession,
                               think_max: bool) -> tuple[SessionInfo, int]:
        """A new worker session with the agent's system prompt and tools. A taken ID (a compaction that died before
        the switch, or another session's) is never deleted: the next number is tried."""
        tools = [_worker_tool(t) for t in session.tools]
        for n in range(number, number + _ID_ATTEMPTS):
            suffix = f"-c{n}"
            try:
                return client.create_session(system_prompt=session.system_prompt, tools=tools, think_max=think_max,
                                             session_id=base[:_MAX_ID - len(suffix)] + suffix), n
            except AlreadyExists:
                continue
        raise AlreadyExists(f"worker sessions {base}-c{number}..{number + _ID_ATTEMPTS - 1} all exist")

    def _history(self, session: AgentSession) -> History:
        """The transcript back to its start or to the last summary note (and the rows that summary left out), read
        in pages newest first."""
        rows: list[TranscriptEntry] = []
        summary, floor, before, last = None, None, None, None
        while True:
            page = self.store.page(session.tenant, session.id, before, self.page_size)
            for row in reversed(page):
                if floor is not None and row.seq < floor:
                    return _build_history(rows[::-1], summary, last, session.steps)
                note = row.arguments if row.kind == SYSTEM_NOTE and isinstance(row.arguments, dict) else {}
                if last is None and "compaction" in note:
                    last = note
                if summary is None and "summary" in note:
                    summary, floor = note["summary"], note["summary_before_seq"]
                rows.append(row)
            if len(page) < self.page_size:
                return _build_history(rows[::-1], summary, last, session.steps)
            before = page[0].seq


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


def _summary_messages(summary: str | None) -> list[Message]:
    if summary is None:
        return []
    return [{"role": "user", "content": f"[Summary of the earlier conversation, written at compaction]\n{summary}"}]


def _worker_tool(tool: dict[str, Any]) -> Tool:
    """An OpenAI tool object (as the agent session keeps them) as the worker client takes it."""
    function = tool.get("function", tool)
    return Tool(function["name"], function.get("description", ""), function.get("parameters", {}))
