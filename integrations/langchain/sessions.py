"""Which worker session holds each LangGraph thread's history, so that a graph's next step sends (and the worker
prefills) only the messages the session lacks.

Per thread and session head (system prompt, tools, response format, Think Max: what a worker session fixes when it is
created) the model keeps a few branches: worker sessions, each with the messages it holds and the commit that holds
each prefix ending with one of its replies. A call whose history extends a branch continues it. A call whose history
leaves every branch (LangGraph time travel, an edited or removed message) forks the branch sharing the longest prefix
at the commit that holds it, and sends the rest; with nothing shared, it starts a new session. This bookkeeping is in
memory, per model instance and process: another process, or a restarted one, starts new sessions, never a wrong one.
Pure bookkeeping: the calls to the worker are turns.py's.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from foundation.clients.worker import Message, Tool

Action = Literal["continue", "fork", "create"]


@dataclass
class Head:
    """What a worker session fixes at creation. Calls with another head (other tools, a structured output's schema)
    on the same thread run on sessions of their own."""

    system_prompt: str = ""
    tools: Sequence[Tool] = ()
    response_format: dict[str, Any] | None = None
    think_max: bool = False

    def key(self) -> str:
        return json.dumps([self.system_prompt, [asdict(t) for t in self.tools], self.response_format, self.think_max],
                          sort_keys=True)


@dataclass(eq=False)  # a branch is itself, whatever it holds
class Branch:
    """A worker session and the history it holds after its head. `commits` maps a prefix length of `messages` to
    the commit holding exactly that prefix (its creation, its fork point, or the end of a reply): the points a fork
    can start from. `busy` while a call runs on it (a worker session takes one request at a time)."""

    session_id: str
    address: str  # the worker that served it last: the routing hint
    messages: list[Message]
    commits: dict[int, int]
    busy: bool = False


@dataclass
class Plan:
    """How one call starts: `continue` `branch` (held busy), `fork` `branch` at `commit`, or `create` a session; the
    session then holds `history[:base]` and the call sends the rest."""

    thread_id: str
    head: Head
    history: list[Message]
    action: Action
    branch: Branch | None = None
    base: int = 0
    commit: int | None = None
    holds: bool = False  # whether this call holds `branch` busy (a fork's source is not held)

    @property
    def new_messages(self) -> list[Message]:
        return self.history[self.base:]

    @property
    def expected_commit(self) -> int | None:
        """The commit a continued session must still be at (else another request moved it)."""
        return self.branch.commits[self.base] if self.action == "continue" and self.branch else None


def shared_prefix(a: Sequence[Message], b: Sequence[Message]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@dataclass
class _Thread:
    branches: dict[str, list[Branch]] = field(default_factory=dict)  # by head key, most recently used last


class ThreadSessions:
    """The branches of every thread: `max_threads` threads (least recently used forgotten first), `max_branches`
    per thread and head. A forgotten branch's worker session is left to the worker's session TTL. Thread-safe: the
    lock is held for bookkeeping only, never across a call to the worker."""

    def __init__(self, max_threads: int = 1024, max_branches: int = 8) -> None:
        self.max_threads, self.max_branches = max_threads, max_branches
        self._threads: OrderedDict[str, _Thread] = OrderedDict()
        self._lock = threading.Lock()

    def plan(self, thread_id: str, head: Head, history: list[Message]) -> Plan:
        """Continue the branch `history` extends (if no call runs on it), else fork the branch sharing the longest
        prefix that ends at a commit, else create. A continued branch is held busy until `finished` or `release`."""
        with self._lock:
            branches = self._branches(thread_id, head)
            fork: tuple[int, Branch] | None = None
            for branch in reversed(branches):  # most recently used first
                shared = shared_prefix(branch.messages, history)
                if shared == len(branch.messages) < len(history) and not branch.busy:
                    branch.busy = True
                    self._touch(branches, branch)
                    return Plan(thread_id, head, history, "continue", branch, base=shared, holds=True)
                point = max((n for n in branch.commits if n <= shared), default=0)
                if point > 0 and (fork is None or point > fork[0]):
                    fork = (point, branch)
            if fork is None:
                return Plan(thread_id, head, history, "create")
            point, source = fork
            return Plan(thread_id, head, history, "fork", source, base=point, commit=source.commits[point])

    def fallback(self, plan: Plan, error: Exception, *, session_gone: bool) -> Plan:
        """The next plan when the worker refused this one's start (`error` is raised when there is none): a
        continued session that moved on (another request, a failed turn that committed its input) is forked at the
        commit recorded; a session or commit the worker no longer has (`session_gone`: expired, deleted, pruned) is
        dropped and a new session created."""
        with self._lock:
            self._release(plan)
            branch = plan.branch
            if plan.action == "create" or branch is None:
                raise error
            if plan.action == "continue" and not session_gone:
                return Plan(plan.thread_id, plan.head, plan.history, "fork", branch, base=plan.base,
                            commit=branch.commits[plan.base])
            if plan.action == "fork" and plan.base != len(branch.messages):
                branch.commits.pop(plan.base, None)  # an older commit pruned: the rest of the branch stands
            else:
                self._forget(plan.thread_id, plan.head, branch)
            return Plan(plan.thread_id, plan.head, plan.history, "create")

    def started(self, plan: Plan, session_id: str, address: str, commit: int) -> None:
        """A created or forked session now holds `history[:base]` at `commit`; the call runs on it (busy)."""
        branch = Branch(session_id, address, list(plan.history[:plan.base]), {plan.base: commit}, busy=True)
        with self._lock:
            branches = self._branches(plan.thread_id, plan.head)
            branches.append(branch)
            idle = [b for b in branches if not b.busy]
            for old in idle[: max(0, len(branches) - self.max_branches)]:
                branches.remove(old)
        plan.branch, plan.holds = branch, True

    def finished(self, plan: Plan, reply: Message, commit: int, address: str) -> None:
        """The call's reply is committed at `commit`: the branch now holds the history and the reply."""
        branch = plan.branch
        assert branch is not None and plan.holds, "finished() needs the branch this call holds (continued or started)"
        with self._lock:
            branch.messages = [*plan.history, reply]
            branch.commits[len(branch.messages)] = commit
            branch.address = address
            self._release(plan)

    def release(self, plan: Plan) -> None:
        """The call failed or was cancelled: the branch keeps its last recorded commit (a later call that finds the
        session moved past it forks there)."""
        with self._lock:
            self._release(plan)

    def drop_thread(self, thread_id: str) -> list[Branch]:
        """Forget a thread; its branches, whose worker sessions the caller may delete."""
        with self._lock:
            thread = self._threads.pop(thread_id, None)
        return [b for branches in (thread.branches.values() if thread else ()) for b in branches]

    # -- under the lock ------------------------------------------------------------------------------------------

    def _branches(self, thread_id: str, head: Head) -> list[Branch]:
        thread = self._threads.get(thread_id)
        if thread is None:
            thread = self._threads[thread_id] = _Thread()
            while len(self._threads) > self.max_threads:
                self._threads.popitem(last=False)
        self._threads.move_to_end(thread_id)
        return thread.branches.setdefault(head.key(), [])

    @staticmethod
    def _release(plan: Plan) -> None:
        if plan.holds and plan.branch is not None:
            plan.branch.busy, plan.holds = False, False

    @staticmethod
    def _touch(branches: list[Branch], branch: Branch) -> None:
        branches.remove(branch)
        branches.append(branch)

    def _forget(self, thread_id: str, head: Head, branch: Branch) -> None:
        thread = self._threads.get(thread_id)
        branches = thread.branches.get(head.key(), []) if thread else []
        if any(b is branch for b in branches):
            branches.remove(branch)
