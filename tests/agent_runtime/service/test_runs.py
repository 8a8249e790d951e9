"""Detached turns (TurnRunner) over a real SQLite store with an in-process fake loop: events followed from memory in
the runtime that runs the turn and from SQL in another, cancels crossing runtimes through the heartbeat, orphaned
turns adopted, failures mapped to status codes, retried starts and the per-tenant limit."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict

import pytest

from agent_runtime.events import ModeChosen, StepStarted, TextDelta, ToolStarted, TurnDone, TurnFailed, TurnUsage
from agent_runtime.service.runs import TurnRequest, TurnRunner
from agent_runtime.store.transcript import TranscriptStore, upgrade
from agent_runtime.store.turns import TurnStore
from foundation.limits import TenantLimit
from foundation.sql import make_engine, sessions


class FakeLoop:
    """Yields a scripted turn; `script(messages, control)` is a generator of events."""

    def __init__(self, store: TranscriptStore, script) -> None:
        self.store, self.script, self.calls = store, script, []

    def run_turn(self, tenant, session_id, messages, *, control, **options):
        self.calls.append(messages)
        yield from self.script(messages, control)


def answer(messages, control):
    yield ModeChosen("non-think", "asked for", False)
    yield StepStarted(1, "non-think")
    yield TextDelta("hel", False)
    yield TextDelta("lo", False)
    yield ToolStarted("c1", "pick", {"color": "red"})
    yield TurnDone("answer", "hello", "", 1, TurnUsage(completion_tokens=2))


def until_cancelled(messages, control):
    yield ModeChosen("non-think", "asked for", False)
    while not control.cancelled():
        time.sleep(0.02)
    yield TurnDone("cancelled", "", "", 0)


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path}/agent.db"
    upgrade(url)
    factory = sessions(make_engine(url))
    store = TranscriptStore(factory)
    store.create("acme", "s")
    return factory, store


def runner(db, script, **options) -> TurnRunner:
    factory, store = db
    return TurnRunner(FakeLoop(store, script), TurnStore(factory, options.pop("stale_after_s", 30)),
                      heartbeat_s=options.pop("heartbeat_s", 0.05), poll_s=0.02, **options)


def test_events_followed_here_and_from_another_runtime(db):
    here, elsewhere = runner(db, answer), runner(db, answer)
    turn_id = here.start("acme", "s", TurnRequest(messages=[{"role": "user", "content": "hi"}]))
    local = list(here.follow("acme", turn_id, -1))
    assert [type(e).__name__ for _, e in local] == ["ModeChosen", "StepStarted", "TextDelta", "TextDelta",
                                                    "ToolStarted", "TurnDone"]
    assert [seq for seq, _ in local] == list(range(6))
    remote = list(elsewhere.follow("acme", turn_id, -1))
    assert [(seq, type(e).__name__) for seq, e in remote] == [
        (seq, type(e).__name__) for seq, e in local if not isinstance(e, TextDelta)]
    assert [seq for seq, _ in elsewhere.follow("acme", turn_id, 3)] == [4, 5]
    turn = here.turns.get("acme", turn_id)
    assert (turn.status, turn.mode, turn.stop_reason) == ("done", "non-think", "answer")
    assert turn.usage == asdict(TurnUsage(completion_tokens=2))
    # A retried start with the same ID runs nothing again.
    assert here.start("acme", "s", TurnRequest(), turn_id=turn_id) == turn_id and len(here.loop.calls) == 1
    with pytest.raises(ValueError, match="another session"):
        db[1].create("acme", "t")
        here.start("acme", "t", TurnRequest(), turn_id=turn_id)


def test_a_cancel_asked_of_another_runtime_reaches_the_turn(db):
    here, elsewhere = runner(db, until_cancelled), runner(db, answer)
    turn_id = here.start("acme", "s", TurnRequest())
    elsewhere.cancel("acme", turn_id)
    events = [e for _, e in here.follow("acme", turn_id, -1)]
    assert events[-1] == TurnDone("cancelled", "", "", 0)
    assert here.turns.get("acme", turn_id).status == "cancelled"


def test_an_orphaned_turn_is_adopted_and_its_input_not_sent_twice_once_recorded(db):
    release = threading.Event()

    def hangs(messages, control):
        yield ModeChosen("non-think", "asked for", False)
        release.wait(10)
        return
        yield

    dead = runner(db, hangs, adopt_orphans=False)
    turn_id = dead.start("acme", "s", TurnRequest(messages=[{"role": "user", "content": "hi"}]))
    dead._stopping.set()  # its heartbeats stop: as if the process died
    adopter = runner(db, answer, stale_after_s=0.3)
    events = [e for _, e in adopter.follow("acme", turn_id, 0)]
    assert isinstance(events[-1], TurnDone)
    turn = adopter.turns.get("acme", turn_id)
    assert (turn.status, turn.owner) == ("done", adopter.owner)
    assert adopter.loop.calls == [[{"role": "user", "content": "hi"}]]  # no step of it was recorded: sent again
    release.set()
    assert not dead.turns.finish("acme", turn_id, dead.owner, "done")  # the dead owner can no longer end it


def test_a_failing_turn_reports_its_status_code_and_the_tenant_limit(db):
    def fails(messages, control):
        yield ModeChosen("non-think", "asked for", False)
        raise ValueError("bad sampling")

    failing = runner(db, fails, max_turns_per_tenant=1)
    turn_id = failing.start("acme", "s", TurnRequest())
    events = [e for _, e in failing.follow("acme", turn_id, -1)]
    assert events[-1] == TurnFailed("INVALID_ARGUMENT", "ValueError: bad sampling")
    assert failing.turns.get("acme", turn_id).status == "failed"
    blocked = runner(db, until_cancelled, max_turns_per_tenant=1)
    db[1].create("acme", "s2")
    first = blocked.start("acme", "s2", TurnRequest())
    with pytest.raises(TenantLimit):
        blocked.start("acme", "s", TurnRequest())
    blocked.cancel("acme", first)
    list(blocked.follow("acme", first, -1))
