"""Rebuilding an agent's worker session from its transcript, and context compaction, its main use: when the worker
session nears the model's context limit, a policy compacts the history (old tool results cleared, or the older steps
summarized by the model) and a new worker session is built from it. The same rebuild brings an agent session back
when its worker session is gone (expired by the workers' upkeep after `session_ttl_hours` idle, or deleted). The
transcript keeps every row; a note records each rebuild."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent_runtime.events import Compacted
from agent_runtime.history import History, Message, read_history, summary_messages
from agent_runtime.store.tables import SYSTEM_NOTE, AgentSession
from agent_runtime.store.transcript import Entry, TranscriptStore
from foundation.clients.worker import AlreadyExists, Sampling, SessionInfo, Tool, WorkerClient
from foundation.registry import WorkerPool

_MAX_ID, _ID_ATTEMPTS = 128, 8  # the worker's longest session ID; taken IDs skipped before giving up
REBUILD = "rebuild"  # the policy a Compacted event names for a lost worker session rebuilt ("rebuild+<policy>")


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
        messages = summary_messages(history.summary)
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
        messages = [*summary_messages(summary), *(m for step in kept for m in step.messages)]
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



class Rebuilder:
    """Builds an agent's worker session anew from its transcript, on a worker the caller is connected to, and points
    the agent session at it. `policy` (the compaction policy, when there is one) shortens what it can of a rebuilt
    history; the rest goes in whole."""

    def __init__(self, store: TranscriptStore, workers: WorkerPool[WorkerClient] | WorkerClient,
                 policy: CompactionPolicy | None = None, page_size: int = 500) -> None:
        self.store, self.policy, self.page_size = store, policy, page_size
        self.workers = workers if isinstance(workers, WorkerPool) else WorkerPool.of(workers)

    def rebuild(self, tenant: str, session: AgentSession, client: WorkerClient, address: str) -> Compacted:
        """The agent session's worker session is gone: a new one on `client`'s worker, at `address`. Its Think Max
        head is the agent session's own (the old session cannot be asked). The event's tokens_before is 0: nothing
        of the old session was left."""
        history = read_history(self.store, session, self.page_size)
        compacted = self.policy.compact(history, client) if self.policy is not None else None
        name = REBUILD if compacted is None else f"{REBUILD}+{self.policy.name}"
        compacted = compacted or CompactedHistory(history.messages(), "in full")
        old = session.worker_session_id
        return self._switch(
            tenant, session, client, address, history, compacted, name, 0, session.think_max,
            f"[Context restored from the saved conversation ({compacted.what}); the earlier context was no longer "
            "kept. The conversation continues from here.]",
            lambda tokens: f"worker session {old} was gone (expired or deleted): rebuilt from the transcript "
                           f"({compacted.what}) with {tokens} tokens",
            {"cause": "worker session not found"})

    def _switch(self, tenant: str, session: AgentSession, client: WorkerClient, address: str, history: History,
                compacted: CompactedHistory, policy_name: str, tokens_before: int, think_max: bool, notice: str,
                says: Callable[[int], str], cause: dict[str, Any] | None = None) -> Compacted:
        """A new worker session holding `compacted`, then `notice`; the agent session pointed at it; a note that
        opens with what `says` of the new session's length."""
        old, last = session.worker_session_id, history.last_compaction
        # Numbered from the rebuild that made the current worker session (agent-x, agent-x-c1, agent-x-c2...).
        base, number = (last["id_base"], last["compaction"] + 1) if last and last["worker_session_id"] == old \
            else (old, 1)
        info, number = self._create_worker_session(client, base, number, session, think_max)
        if compacted.messages:  # an agent session with no step yet: its system prompt and tools are all there is
            # One append in non-think mode: earlier assistant turns render as the V4 encoder renders turns before
            # the last user message (reasoning dropped, `</think>` then the answer). An append must end with a
            # user-side message; the notice is that message, so the model also learns why the older context looks
            # as it does. The loop's next Generate closes the turn it opens with an empty reply (the worker's rule
            # for a turn that got none) and then adds its input.
            info = client.append(info.session_id, [*compacted.messages, {"role": "developer", "content": notice}],
                                 mode="non-think", expected_commit=info.commit)
        # An old worker session still there is left in place: forks and recovery of earlier steps start from it.
        self.workers.placed(info.session_id, address)
        self.store.set_worker(tenant, session.id, info.session_id, info.commit, address)
        details = {"compaction": number, "id_base": base, "policy": policy_name, "tokens_before": tokens_before,
                   "tokens_after": info.tokens, "worker_session_id": info.session_id,
                   "previous_worker_session_id": old, **(cause or {})}
        if compacted.summary is not None:
            details |= {"summary": compacted.summary, "summary_before_seq": compacted.summary_before_seq}
        # After the switch: a crash in between loses only the note (the next compaction then reads further back).
        self.store.append_note(tenant, session.id, Entry(
            SYSTEM_NOTE, f"{says(info.tokens)}, now on worker session {info.session_id}", arguments=details))
        return Compacted(policy_name, tokens_before, info.tokens, info.session_id)

    @staticmethod
    def _create_worker_session(client: WorkerClient, base: str, number: int, session: AgentSession,
                               think_max: bool) -> tuple[SessionInfo, int]:
        """A new worker session with the agent's system prompt and tools. A taken ID (a rebuild that died before
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


class Compactor(Rebuilder):
    """The loop's compaction hook: rebuilds an agent's worker session from a compacted history once it is longer
    than the trigger, on the worker that serves it. A lost worker session is rebuilt with the same policy."""

    def __init__(self, store: TranscriptStore, workers: WorkerPool[WorkerClient] | WorkerClient,
                 settings: Compaction | None = None, page_size: int = 500) -> None:
        self.settings = settings or Compaction()
        super().__init__(store, workers, self.settings.policy, page_size)
        self._trigger = self.settings.trigger_tokens

    def maybe_compact(self, tenant: str, session: AgentSession, context_tokens: int) -> Compacted | None:
        address, client = self.workers.connect(session.worker_session_id, hint=session.worker_address)
        if self._trigger is None:
            self._trigger = int(self.settings.trigger_fraction * client.model_info().max_context)
        if context_tokens <= self._trigger:
            return None
        policy, history = self.settings.policy, read_history(self.store, session, self.page_size)
        compacted = policy.compact(history, client)
        if compacted is None:  # the context is all recent steps: tried again next turn
            return None
        return self._switch(
            tenant, session, client, address, history, compacted, policy.name, context_tokens,
            client.get_session(session.worker_session_id).think_max,
            f"[Context compacted: {compacted.what}. The conversation continues from here.]",
            lambda tokens: f"compacted by {policy.name} ({compacted.what}): {context_tokens} -> {tokens} tokens")


def _worker_tool(tool: dict[str, Any]) -> Tool:
    """An OpenAI tool object (as the agent session keeps them) as the worker client takes it."""
    function = tool.get("function", tool)
    return Tool(function["name"], function.get("description", ""), function.get("parameters", {}))
