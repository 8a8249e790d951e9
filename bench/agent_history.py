"""What the agent benchmark and the long-history test share: a real `tiny` worker whose session store counts
what it serves, synthetic histories (transcript rows and worker sessions, labelled as such) and one measured
turn."""

from __future__ import annotations

import contextlib
import inspect
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy
import torch

from agent_runtime.loop import AgentLoop, Limits
from agent_runtime.store.tables import ASSISTANT, FINISHED, TOOL_CALL, TOOL_RESULT, USER, AgentSession, StepRecord
from agent_runtime.store.tables import TranscriptEntry as Row
from agent_runtime.store.transcript import TranscriptStore
from agent_runtime.tools import ToolRegistry
from bench.synthetic_state import fill_synthetic
from foundation.clients.worker import Sampling
from foundation.sql import utcnow
from model_worker.engine.loading import load_model
from model_worker.server.serve import serve_in_process
from model_worker.sessions import BlobStore, OpenSession, open_blobs

PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
TENANT = "acme"
ROWS_PER_TURN = 5
# A commit's shape (page groups completed, token pages, the open pages in the tail) repeats every 8,192 tokens on
# `tiny`: its largest page group (ratio 128 x 64 entries) and two token pages. Sessions whose lengths differ by a
# multiple of it write the same values per turn.
PERIOD = 8192
CONTEXT_EDGE = 123 * PERIOD  # 1,007,616: past a million tokens, with room for turns under the 1,048,576 context
MESSAGE = [{"role": "user", "content": "pick one"}]
SAMPLING = Sampling(temperature=0.0, max_tokens=48)  # room for the forced call; the answer is cut there
_END = object()


class CountingBlobs:
    """A real blob store with counters of what passes through it: values and bytes read and written, and lookups
    (exists, size, list, written_at): a turn's work in the worker's session tiers."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner, self.url = inner, inner.url
        self.values_read = self.bytes_read = self.values_written = self.bytes_written = self.lookups = 0

    def counts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in ("values_read", "bytes_read", "values_written",
                                                       "bytes_written", "lookups")}

    def get(self, key: str) -> bytes | None:
        value = self.inner.get(key)
        if value is not None:
            self.values_read, self.bytes_read = self.values_read + 1, self.bytes_read + len(value)
        return value

    def put(self, key: str, data: bytes) -> None:
        self.inner.put(key, data)
        self.values_written, self.bytes_written = self.values_written + 1, self.bytes_written + len(data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        written = self.inner.put_if_absent(key, data)
        if written:
            self.values_written, self.bytes_written = self.values_written + 1, self.bytes_written + len(data)
        return written

    def exists(self, key: str) -> bool:
        self.lookups += 1
        return self.inner.exists(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str):
        self.lookups += 1
        return self.inner.list(prefix)

    def written_at(self, key: str) -> float | None:
        self.lookups += 1
        return self.inner.written_at(key)

    def size(self, key: str) -> int | None:
        self.lookups += 1
        return self.inner.size(key)


class Timed:
    """Delegates to a real object, adding up the seconds spent in each method (iterating a returned generator
    included): how the bench splits a turn's time between the store and the worker's RPCs."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.seconds = inner, defaultdict(float)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.inner, name)
        if not inspect.ismethod(value):
            return value

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                result = value(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start
            return self._iterate(name, result) if inspect.isgenerator(result) else result
        return timed

    def _iterate(self, name: str, generator):
        with contextlib.closing(generator):  # the caller closing early closes the real stream (a cancel)
            while True:
                start = time.perf_counter()
                item = next(generator, _END)
                self.seconds[name] += time.perf_counter() - start
                if item is _END:
                    return
                yield item


def pick_tools() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool(idempotent=True)
    def pick(color: str) -> str:
        """Pick a color."""
        return f"picked {color}"

    tools.get("pick").parameters["properties"]["color"]["enum"] = ["red"]  # one choice: every call the same tokens
    return tools


def synthetic_history(store: TranscriptStore, like: AgentSession, session_id: str, turns: int,
                      worker: tuple[str, int, str | None]) -> None:
    """An agent session with `like`'s prompt and tools and `turns` turns of synthetic transcript (labelled: rows and
    step records shaped like the loop's, contents made up), bulk-inserted; `worker` is its (worker session, commit,
    address)."""
    store.create(like.tenant, session_id, like.system_prompt, like.tools, worker[0], like.think_max)
    batch = 10_000
    for first in range(0, turns, batch):
        rows, steps, now = [], [], utcnow()
        for t in range(first, min(turns, first + batch)):
            seq, step, call = t * ROWS_PER_TURN, 2 * t + 1, f"h{t}"
            base = {"tenant": like.tenant, "session_id": session_id, "created_at": now, "is_error": False}
            rows += [{**base, "seq": seq, "step": step, "kind": USER, "content": f"question {t}"},
                     {**base, "seq": seq + 1, "step": step, "kind": ASSISTANT, "content": ""},
                     {**base, "seq": seq + 2, "step": step, "kind": TOOL_CALL, "tool_call_id": call,
                      "tool_name": "pick", "arguments": {"color": "red"}, "call_status": FINISHED,
                      "idempotency_key": f"{session_id}/{step}/{call}"},
                     {**base, "seq": seq + 3, "step": step, "kind": TOOL_RESULT, "tool_call_id": call,
                      "content": "picked red"},
                     {**base, "seq": seq + 4, "step": step + 1, "kind": ASSISTANT, "content": f"answer {t}"}]
            steps += [{"tenant": like.tenant, "session_id": session_id, "step": s, "mode": "non-think",
                       "worker_session_id": worker[0],
                       "worker_commit": 0, "first_seq": first_seq, "created_at": now}
                      for s, first_seq in ((step, seq), (step + 1, seq + 4))]
        with store.sessions.begin() as s:
            s.execute(sqlalchemy.insert(Row), rows)
            s.execute(sqlalchemy.insert(StepRecord), steps)
    with store.sessions.begin() as s:
        s.execute(sqlalchemy.update(AgentSession)
                  .where(AgentSession.tenant == like.tenant, AgentSession.id == session_id)
                  .values(next_seq=turns * ROWS_PER_TURN, steps=2 * turns))
        # Statistics as autovacuum keeps them for a table that grew over hours: planned blind, right after a bulk
        # load, PostgreSQL walks a session's rows in key order instead of taking the (session, step) index.
        for table in (Row.__tablename__, StepRecord.__tablename__):
            s.execute(sqlalchemy.text(f"ANALYZE {table}"))
    store.set_worker(like.tenant, session_id, *worker)


def synthetic_worker_session(runtime, session_id: str, like: OpenSession, extra_tokens: int, seed: int = 0) -> int:
    """A worker session `extra_tokens` longer than `like`, with its head, chat state (what the next turn renders
    after, the tokens owed to the model), sampler state and number of commits, kept hot like a session in use; its
    state is filled synthetically (labelled: what a real prefill of that many tokens leaves, the contents random).
    Returns its commit."""
    store = runtime.store
    session = store.create(like.tenant, like.head, session_id)
    tokens = len(like.token_ids) + extra_tokens
    fill_synthetic(session.state, tokens, seed)
    if like.state.mtp_pairs == 0:  # served without MTP drafts, the MTP layer never ran: its window stays empty
        session.state.mtp_pairs = 0
        for layer in session.state.mtp_layers:
            layer.window.clear(0)
    session.chat, session.state.sampling = like.chat, like.state.sampling  # it has sampled before, as `like` has
    generator = torch.Generator().manual_seed(seed)
    token_ids = torch.randint(0, runtime.model.config.vocab_size, (tokens,), generator=generator).tolist()
    store.commit(session, token_ids)
    while session.seq < like.seq:  # as many commits as `like` (the retained ones, pruned past 8, are read)
        store.commit(session, [])
    runtime.hot.add(session)
    return session.seq


@dataclass
class TurnWork:
    """What one turn did: counters (the same whatever the history, if the turn's work is flat) and timings."""

    statements: int
    rows_read: int
    rows_written: int
    operations: dict[str, int]  # transcript store operations called
    blobs: dict[str, int]  # CountingBlobs.counts()
    usage: dict[str, int]
    reason: str
    steps: int
    seconds: float
    split: dict[str, float] = field(default_factory=dict)  # seconds by path (bench only)


def measure_turn(loop: AgentLoop, blobs: CountingBlobs, session_id: str) -> TurnWork:
    """Run one turn (MESSAGE, a forced call of `pick`, its result, the answer) and count its work."""
    store = loop.store
    engine = store.sessions.kw["bind"]
    statements: list[str] = []

    def count(connection, cursor, statement, *rest) -> None:
        statements.append(statement)

    stats, before = store.stats, blobs.counts()
    read, written, operations = stats.rows_read, stats.rows_written, dict(stats.by_operation)
    sqlalchemy.event.listen(engine, "before_cursor_execute", count)
    try:
        start = time.perf_counter()
        done = list(loop.run_turn(TENANT, session_id, MESSAGE, sampling=SAMPLING, first_tool_choice="pick",
                                  limits=Limits(max_steps=2)))[-1]
        seconds = time.perf_counter() - start
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", count)
    after = blobs.counts()
    return TurnWork(len(statements), stats.rows_read - read, stats.rows_written - written,
                    {k: v - operations.get(k, 0) for k, v in stats.by_operation.items() if v != operations.get(k, 0)},
                    {k: after[k] - before[k] for k in after}, asdict(done.usage), done.reason, done.steps, seconds)


def start_worker(root: str):
    """A real model worker on localhost (`tiny`), its session store in `root` behind counters: (runtime, blobs,
    address, stop)."""
    blobs = CountingBlobs(open_blobs(root))
    worker = serve_in_process(load_model(None, "tiny", numerics="official"), blobs, token_budget=256)
    return worker.runtime, blobs, worker.address, worker.stop
