"""An agent session outlives its worker session: the workers' upkeep expires a worker session idle for
`session_ttl_hours` (deleted, as `delete_session` does here). The next turn finds it gone (NOT_FOUND), rebuilds a
worker session from the transcript in SQL, says so (a Compacted event, a note), and goes on. On a real `tiny` worker
and SQLite; what the new session holds is read from the worker's own session store."""

from __future__ import annotations

import pytest
from realparts import tiny_worker_in_process

from agent_runtime.compaction import ClearToolResults, Compaction, Compactor, Rebuilder
from agent_runtime.events import Compacted, ModeChosen, StepStarted, TurnDone
from agent_runtime.loop import AgentLoop, Limits
from agent_runtime.store.tables import SYSTEM_NOTE, TOOL_CALL, TOOL_RESULT
from agent_runtime.store.transcript import TranscriptStore, upgrade
from agent_runtime.tools import ToolRegistry
from foundation.clients.worker import NotFound, Sampling, WorkerClient
from foundation.sql import make_engine, sessions
from model_worker.sessions.manifest import tenant_key

SAMPLING, ONE_STEP = Sampling(temperature=0.0, max_tokens=60), Limits(max_steps=1)  # room for a whole call
RESTORED = "Context restored from the saved conversation"


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    with tiny_worker_in_process(tmp_path_factory.mktemp("expiry-worker")) as worker:
        yield worker


@pytest.fixture
def client(worker):
    client = WorkerClient(worker.address, timeout=120)
    yield client
    client.close()


@pytest.fixture
def store(tmp_path):
    url = f"sqlite:///{tmp_path}/agent.db"
    upgrade(url)
    return TranscriptStore(sessions(make_engine(url)))


def picking_tools(store: TranscriptStore, client: WorkerClient) -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool()
    def pick(color: str) -> str:
        """Pick a color."""
        return f"picked {color}: " + " ".join(f"shade{i}" for i in range(40))

    @tools.tool()
    def forget(color: str) -> str:
        """Forget a color."""
        # The worker session expires while the turn runs: its next step finds it gone.
        client.delete_session(store.get("acme", "e1").worker_session_id)
        return f"forgot {color}"

    for name in ("pick", "forget"):
        tools.get(name).parameters["properties"]["color"]["enum"] = ["red", "blue"]
    return tools


def prefilled(worker, session_id: str, tokens: int | None = None) -> str:
    """The text of the worker session's stored token log (its first `tokens`)."""
    sessions_, tk = worker.runtime.store, tenant_key("default")
    ids = sessions_.read_tokens(tk, sessions_.read_commit(tk, session_id, None))
    return worker.runtime.tokenizer.decode(ids[:tokens])


def turn(loop: AgentLoop, text: str, tool: str | None = None, limits: Limits = ONE_STEP) -> list:
    return list(loop.run_turn("acme", "e1", [{"role": "user", "content": text}], sampling=SAMPLING,
                              first_tool_choice=tool, limits=limits))


def notes(store: TranscriptStore) -> list[dict]:
    return [r.arguments for r in store.page("acme", "e1", None, 1000) if r.kind == SYSTEM_NOTE]


def test_a_turn_after_expiry_rebuilds_the_worker_session_from_the_transcript(worker, client, store):
    loop = AgentLoop(store, client, picking_tools(store, client))  # no compactor: the history goes in whole
    loop.create_session("acme", "e1", system_prompt="use tools", tools=["pick"])
    turn(loop, "pick a color for the walls", "pick")
    old = store.get("acme", "e1").worker_session_id
    client.delete_session(old)  # what the workers' upkeep does after session_ttl_hours idle

    events = turn(loop, "and one for the door")

    (rebuilt,) = [e for e in events if isinstance(e, Compacted)]
    assert rebuilt.policy == "rebuild" and rebuilt.tokens_before == 0 and rebuilt.worker_session_id == f"{old}-c1"
    assert events.index(rebuilt) < next(i for i, e in enumerate(events) if isinstance(e, ModeChosen))
    assert isinstance(events[-1], TurnDone) and events[-1].steps == 1
    session = store.get("acme", "e1")
    assert session.worker_session_id == rebuilt.worker_session_id and session.steps == 2
    assert store.step_record("acme", "e1", 2).worker_session_id == rebuilt.worker_session_id
    assert session.worker_commit == client.get_session(rebuilt.worker_session_id).commit
    with pytest.raises(NotFound):
        client.get_session(old)

    # The rebuild prefilled the first turn's exchange (its call; its result is the step's input) and the notice.
    step1 = store.step_entries("acme", "e1", 1)
    call, result = next(e for e in step1 if e.kind == TOOL_CALL), next(e for e in step1 if e.kind == TOOL_RESULT)
    restored = prefilled(worker, rebuilt.worker_session_id, rebuilt.tokens_after)
    assert "use tools" in restored and "pick a color for the walls" in restored and RESTORED in restored
    assert f'string="true">{call.arguments["color"]}</' in restored and result.content not in restored
    whole = prefilled(worker, rebuilt.worker_session_id)
    assert whole.index(RESTORED) < whole.index(result.content) < whole.index("and one for the door")

    (note,) = notes(store)
    assert note == {"compaction": 1, "id_base": old, "policy": "rebuild", "tokens_before": 0,
                    "tokens_after": rebuilt.tokens_after, "worker_session_id": rebuilt.worker_session_id,
                    "previous_worker_session_id": old, "cause": "worker session not found"}

    # The next turn runs on the new session as on any other.
    events = turn(loop, "thanks")
    assert not any(isinstance(e, Compacted) for e in events) and isinstance(events[-1], TurnDone)
    assert store.get("acme", "e1").worker_session_id == rebuilt.worker_session_id and len(notes(store)) == 1


def test_a_session_lost_mid_turn_is_rebuilt_with_the_compaction_policy(worker, client, store):
    compactor = Compactor(store, client, Compaction(ClearToolResults(keep_last=0), trigger_tokens=1_000_000))
    loop = AgentLoop(store, client, picking_tools(store, client), compactor=compactor)
    loop.create_session("acme", "e1", system_prompt="use tools")
    turn(loop, "pick a color", "pick")
    picked = next(e for e in store.step_entries("acme", "e1", 1) if e.kind == TOOL_RESULT).content
    old = store.get("acme", "e1").worker_session_id

    # Step 2's call deletes the worker session; step 3 finds it gone, and runs again on a rebuilt one.
    events = turn(loop, "now forget it", "forget", Limits(max_steps=2))

    (rebuilt,) = [e for e in events if isinstance(e, Compacted)]
    assert rebuilt.policy == "rebuild+clear_tool_results" and rebuilt.worker_session_id == f"{old}-c1"
    after = events[events.index(rebuilt) + 1]
    assert isinstance(after, StepStarted) and after.step == 3  # the step runs again, on the new session
    assert isinstance(events[-1], TurnDone) and events[-1].steps == 2
    session = store.get("acme", "e1")
    assert session.steps == 3 and store.step_record("acme", "e1", 3).worker_session_id == rebuilt.worker_session_id
    restored = prefilled(worker, rebuilt.worker_session_id, rebuilt.tokens_after)
    assert "pick a color" in restored and "now forget it" in restored and RESTORED in restored
    assert picked not in restored and "tool result cleared by compaction" in restored  # the policy applied
    assert notes(store)[0]["policy"] == "rebuild+clear_tool_results"


class VanishingRebuilder(Rebuilder):
    """The real rebuild, whose new worker session is lost again at once (say, a worker store wiped twice)."""

    rebuilds = 0

    def rebuild(self, tenant, session, client, address) -> Compacted:
        event = super().rebuild(tenant, session, client, address)
        client.delete_session(event.worker_session_id)
        self.rebuilds += 1
        return event


def test_a_session_that_keeps_vanishing_fails_the_turn_after_one_rebuild(client, store):
    loop = AgentLoop(store, client, picking_tools(store, client))
    loop.create_session("acme", "e1", system_prompt="use tools")
    client.delete_session(store.get("acme", "e1").worker_session_id)  # gone before any step: nothing to restore
    loop.rebuilder = VanishingRebuilder(store, client)

    events = []
    with pytest.raises(NotFound):
        for event in loop.run_turn("acme", "e1", [{"role": "user", "content": "hi"}], sampling=SAMPLING,
                                   limits=ONE_STEP):
            events.append(event)
    assert loop.rebuilder.rebuilds == 1 and [type(e) for e in events] == [Compacted]
    assert store.get("acme", "e1").steps == 0
