"""A turn's work does not grow with its history: the same turn (a user message, a forced tool call, its result, the
answer) on an agent session with a million tokens of history and on one with a single turn of history does the same
work in the database (statements, rows read and written) and in the worker (values and bytes committed; tokens
prefilled: the new ones only, the history reused).

The long history is synthetic (labelled): 20,000 turns of transcript rows (100,000), bulk-inserted, and a worker
session of 1,007,616 tokens more than the short one, its state filled synthetically (a CPU cannot prefill it in a
test) and given the short session's head, chat and sampler state; the difference is a multiple of the commit's
period, so both sessions' commits write values of the same shapes. The model worker is real (`tiny`, in process,
over gRPC) and so is the database (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from agent_runtime.loop import AgentLoop, Limits, worker_session_name
from agent_runtime.store.transcript import TranscriptStore, upgrade
from bench.agent_history import (
    CONTEXT_EDGE,
    MESSAGE,
    SAMPLING,
    TENANT,
    measure_turn,
    pick_tools,
    start_worker,
    synthetic_history,
    synthetic_worker_session,
)
from foundation.clients.worker import WorkerClient
from foundation.sql import make_engine, sessions

HISTORY_TURNS = 20_000


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    """A real model worker on localhost (`tiny`), its session store on disk behind counters."""
    runtime, blobs, address, stop = start_worker(str(tmp_path_factory.mktemp("long-history-worker")))
    yield runtime, blobs, address
    stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def turns(request, worker, tmp_path_factory):
    """The same turn on a short session and on a long one, in one database: their (short, long) TurnWork."""
    runtime, blobs, address = worker
    if request.param == "postgresql":
        url = request.getfixturevalue("database_url")
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('agent-db')}/agent.db"
    upgrade(url)
    engine = make_engine(url)
    client = WorkerClient(address, timeout=300)
    loop = AgentLoop(TranscriptStore(sessions(engine)), client, pick_tools())
    loop.create_session(TENANT, "short", system_prompt="use tools")
    warm_up = list(loop.run_turn(TENANT, "short", MESSAGE, sampling=SAMPLING, first_tool_choice="pick",
                                 limits=Limits(max_steps=2)))[-1]
    assert warm_up.reason in ("answer", "length") and warm_up.steps == 2, "the call, then a step without one"
    short = loop.store.get(TENANT, "short")
    like = runtime.store.open(runtime.default_tenant, short.worker_session_id)
    long_worker = worker_session_name()  # an ID like the short one's, as long: the records name it
    commit = synthetic_worker_session(runtime, long_worker, like, CONTEXT_EDGE)
    synthetic_history(loop.store, short, "long", HISTORY_TURNS, (long_worker, commit, address))
    long = measure_turn(loop, blobs, "long")
    yield measure_turn(loop, blobs, "short"), long
    client.close()
    engine.dispose()


@pytest.mark.slow
def test_a_turn_does_the_same_database_work_at_a_million_tokens_of_history(turns):
    short, long = turns
    assert (long.reason, long.steps) == (short.reason, short.steps) and short.steps == 2  # the call, then a reply
    assert long.operations == short.operations
    assert (long.statements, long.rows_read, long.rows_written) == (short.statements, short.rows_read,
                                                                    short.rows_written)
    assert long.rows_read < 30  # of 100,000: the session, the open calls, the last step's entries


def test_a_turn_prefills_its_new_tokens_and_commits_its_delta_at_a_million_tokens(turns):
    short, long = turns
    for name in ("prompt_tokens", "prefilled_tokens", "completion_tokens"):
        assert long.usage[name] == short.usage[name], name
    # Each step reuses the whole session before it, 1,007,616 tokens more than the short one's, and prefills the new
    # tokens and those owed (each step's last sampled token and closing EOS, fed at the next).
    assert long.usage["reused_tokens"] - short.usage["reused_tokens"] == long.steps * CONTEXT_EDGE
    assert long.usage["prefilled_tokens"] - long.usage["prompt_tokens"] <= 2 * long.steps
    # The commits write the same values (the pages and token pages the turn completed, the tails, the records), of
    # the same sizes but for tens of bytes each: headers and records spell the long session's positions with more
    # digits and name its last full token page.
    assert long.blobs["values_written"] == short.blobs["values_written"]
    assert abs(long.blobs["bytes_written"] - short.blobs["bytes_written"]) <= 100 * long.blobs["values_written"]


def test_a_turn_reads_the_same_from_the_session_store_at_a_million_tokens(turns):
    short, long = turns
    assert (long.blobs["values_read"], long.blobs["lookups"]) == (short.blobs["values_read"], short.blobs["lookups"])
    # The values read are commit records (the newest, the oldest a commit prunes): up to a token page of unpaged
    # tokens each (4,096 in base64) and a few digits apart.
    assert abs(long.blobs["bytes_read"] - short.blobs["bytes_read"]) <= 22_000 * long.blobs["values_read"]
