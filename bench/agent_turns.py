"""Per-turn latency and work of an agent session at 10, 1,000 and 100,000 turns of history: the runtime path (the
turn through AgentLoop and a `tiny` worker over gRPC), the database path (time inside the transcript store's
operations), SQL statements, transcript rows, and values, bytes and lookups in the worker's session store. Every turn
is the same: a user message, a forced tool call, its result, the answer. Sizes take turns; medians of `--repeats`.

Histories are synthetic (labelled): transcript rows shaped like the loop's (five per turn over two steps), bulk-
inserted, and a worker session filled synthetically (bench/synthetic_state.py) to ~50 tokens per turn; the largest
stands for a compacted one at the edge of the model's 1,048,576-token context (100,000 turns would not fit).

    python -m bench.agent_turns [--turns 10,1000,100000] [--repeats 3] [--database URL]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable

import sqlalchemy

from agent_runtime.loop import AgentLoop, worker_session_name
from agent_runtime.store.transcript import TranscriptStore, upgrade
from bench.agent_history import (
    CONTEXT_EDGE,
    PG,
    ROWS_PER_TURN,
    TENANT,
    CountingBlobs,
    Timed,
    TurnWork,
    measure_turn,
    pick_tools,
    start_worker,
    synthetic_history,
    synthetic_worker_session,
)
from foundation.clients.worker import WorkerClient
from foundation.registry import WorkerPool
from foundation.sql import make_engine, sessions


def database(url: str | None, folder: str) -> tuple[str, str, Callable[[], None]]:
    """(URL, what it is, a cleanup): `url`, else a fresh PostgreSQL database, else SQLite in `folder`."""
    if url:
        return url, url.split(":", 1)[0], lambda: None
    admin, name = sqlalchemy.create_engine(f"{PG}/test", isolation_level="AUTOCOMMIT"), f"bench_{uuid.uuid4().hex}"
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE {name}")
    except sqlalchemy.exc.OperationalError:
        return f"sqlite:///{folder}/agent.db", "SQLite (no PostgreSQL at 127.0.0.1:5432)", lambda: None

    def drop() -> None:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
    return f"{PG}/{name}", "PostgreSQL", drop


def timed_turn(loop: AgentLoop, blobs: CountingBlobs, session_id: str) -> TurnWork:
    """measure_turn, with the turn's time split: in the store's operations (the database path), in the worker's
    Generate streams, in its other RPCs (session info, rewinds)."""
    store, client = loop.store, loop.client
    before_store, before_client = sum(store.seconds.values()), dict(client.seconds)
    work = measure_turn(loop, blobs, session_id)
    spent = {k: v - before_client.get(k, 0.0) for k, v in client.seconds.items()}
    work.split = {"database": sum(store.seconds.values()) - before_store, "generate": spent.pop("generate", 0.0),
                  "other RPCs": sum(spent.values())}
    return work


COLUMNS = [  # (header, a TurnWork's value, format)
    ("turn ms", lambda w: w.seconds * 1e3, ",.0f"), ("database ms", lambda w: w.split["database"] * 1e3, ".1f"),
    ("Generate ms", lambda w: w.split["generate"] * 1e3, ",.0f"),
    ("other worker RPCs ms", lambda w: w.split["other RPCs"] * 1e3, ",.0f"),
    ("SQL statements", lambda w: w.statements, ".0f"), ("rows read", lambda w: w.rows_read, ".0f"),
    ("rows written", lambda w: w.rows_written, ".0f"),
    ("session-store values read", lambda w: w.blobs["values_read"], ",.0f"),
    ("bytes read", lambda w: w.blobs["bytes_read"], ",.0f"), ("lookups", lambda w: w.blobs["lookups"], ",.0f"),
    ("bytes written", lambda w: w.blobs["bytes_written"], ",.0f"),
    ("prefilled tokens", lambda w: w.usage["prefilled_tokens"], ".0f"),
    ("reused tokens", lambda w: w.usage["reused_tokens"], ",.0f"),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", default="10,1000,100000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens-per-turn", type=int, default=50)
    parser.add_argument("--database", default=None, help="a SQLAlchemy URL (default: a fresh PostgreSQL database)")
    args = parser.parse_args()
    sizes = [int(t) for t in args.turns.split(",")]
    root = tempfile.TemporaryDirectory()
    url, what, drop = database(args.database, root.name)
    upgrade(url)
    engine = make_engine(url)
    runtime, blobs, address, stop = start_worker(root.name)
    client = Timed(WorkerClient(address, timeout=600))
    loop = AgentLoop(Timed(TranscriptStore(sessions(engine))), WorkerPool.of(client), pick_tools())
    try:
        loop.create_session(TENANT, "like", system_prompt="use tools")
        measure_turn(loop, blobs, "like")
        like_agent = loop.store.get(TENANT, "like")
        like = runtime.store.open(runtime.default_tenant, like_agent.worker_session_id)
        tokens = {}
        for turns in sizes:
            start = time.perf_counter()
            extra = min(turns * args.tokens_per_turn, CONTEXT_EDGE)  # the largest: a compacted session
            worker = worker_session_name()
            commit = synthetic_worker_session(runtime, worker, like, extra)
            synthetic_history(loop.store.inner, like_agent, f"h{turns}", turns, (worker, commit, address))
            tokens[turns] = len(like.token_ids) + extra
            print(f"<!-- {turns:,} turns of history built in {time.perf_counter() - start:.1f} s -->", flush=True)
        works = defaultdict(list)
        for _ in range(args.repeats):  # sizes take turns, so drift on a noisy machine spreads over all of them
            for turns in sizes:
                works[turns].append(timed_turn(loop, blobs, f"h{turns}"))
    finally:
        loop.workers.close()
        stop()
        engine.dispose()
        drop()
        root.cleanup()
    print(f"\n{what}, {args.repeats} turns per size (medians)\n")
    print("| turns of history | transcript rows | worker session tokens (synthetic) | "
          + " | ".join(c[0] for c in COLUMNS) + " |")
    print("|" + "---|" * (3 + len(COLUMNS)))
    for turns in sizes:
        values = [format(statistics.median(get(w) for w in works[turns]), fmt) for _, get, fmt in COLUMNS]
        print(f"| {turns:,} | {turns * ROWS_PER_TURN:,} | {tokens[turns]:,} | " + " | ".join(values) + " |")


if __name__ == "__main__":
    main()
