"""Agent sessions and transcripts in SQL (SQLite and PostgreSQL): steps appended whole, tool results closing their
calls, open calls found after a crash, the tail read in pages, and a step's database work the same at 20,000 rows of
history as at none."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy
from realparts import fresh_postgres

from agent_runtime.store.tables import ASSISTANT, INTERRUPTED, TOOL_CALL, USER, TranscriptEntry, TurnRecord
from agent_runtime.store.transcript import AgentSessionNotFound, Entry, NotDecidable, TranscriptStore, upgrade
from agent_runtime.store.turns import TurnActive, TurnNotFound, TurnStore
from foundation.sql import make_engine, sessions, utcnow


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/agent.db"
        upgrade(url)
        yield TranscriptStore(sessions(make_engine(url)))
        return
    with fresh_postgres("agent") as url:
        upgrade(url)
        engine = make_engine(url)
        yield TranscriptStore(sessions(engine))
        engine.dispose()


def append(store: TranscriptStore, session: str, entries: list[Entry], tenant: str = "acme") -> list[int]:
    return store.append_step(tenant, session, entries, worker_session_id=f"w-{session}", worker_commit=len(entries))


def a_step(store: TranscriptStore, session: str, n: int) -> None:
    append(store, session, [Entry(USER, f"question {n}"), Entry(ASSISTANT, "let me look", "hmm"),
                                        Entry(TOOL_CALL, tool_call_id=f"c{n}", tool_name="lookup",
                                              arguments={"q": n}, idempotency_key=f"{session}/c{n}")])
    store.finish_call("acme", session, f"c{n}", Entry("tool_result", content=f"answer {n}"))


def test_steps_calls_and_pages(store):
    store.create("acme", "s1", system_prompt="be brief", tools=[{"type": "function", "function": {"name": "x"}}])
    a_step(store, "s1", 1)
    seqs = append(store, "s1", [Entry(USER, "and?"), Entry(TOOL_CALL, tool_call_id="c2", tool_name="lookup",
                                                         arguments={})])
    assert seqs == [4, 5]
    assert [e.tool_call_id for e in store.open_calls("acme", "s1")] == ["c2"]  # started, not finished: a crash here
    store.finish_call("acme", "s1", "c2", Entry("tool_result", content="interrupted", is_error=True),
                      status=INTERRUPTED)
    assert store.open_calls("acme", "s1") == []
    tail = store.page("acme", "s1", limit=3)
    assert [(e.seq, e.kind) for e in tail] == [(4, "user"), (5, "tool_call"), (6, "tool_result")]
    assert [e.seq for e in store.page("acme", "s1", before=tail[0].seq, limit=10)] == [0, 1, 2, 3]
    assert store.get("acme", "s1").steps == 2
    with pytest.raises(AgentSessionNotFound):
        store.get("other", "s1")
    with pytest.raises(AgentSessionNotFound):
        append(store, "s1", [Entry(USER, "x")], tenant="other")


def test_a_fork_shares_its_parents_rows_below_the_fork_step(store):
    store.create("acme", "p")
    for n in (1, 2, 3):
        a_step(store, "p", n)
    fork = store.fork("acme", "p", 2, "f", worker_session_id="w-f", worker_commit=7)
    assert (fork.steps, fork.next_seq, fork.parent_id, fork.fork_seq) == (2, 8, "p", 4)
    assert [e.content for e in store.step_entries("acme", "f", 2)] == ["question 2", "let me look", "", "answer 2"]
    assert [e.content for e in store.step_entries("acme", "f", 1)][0] == "question 1"  # from the parent
    a_step(store, "f", 9)
    assert [e.content for e in store.page("acme", "f", limit=100)] == [
        "question 1", "let me look", "", "answer 1", "question 2", "let me look", "", "answer 2",
        "question 9", "let me look", "", "answer 9"]
    assert [e.seq for e in store.page("acme", "f", before=9, limit=3)] == [6, 7, 8]
    record = store.step_record("acme", "f", 2)
    assert (record.worker_session_id, record.worker_commit) == ("w-f", 7)
    assert store.step_record("acme", "f", 1).worker_session_id == "w-p"
    grandchild = store.fork("acme", "f", 1, "g", worker_session_id="w-g", worker_commit=1)
    assert [e.content for e in store.page("acme", "g")] == ["question 1", "let me look", "", "answer 1"]
    assert grandchild.fork_seq == 0
    with pytest.raises(ValueError):
        store.fork("acme", "p", 4, "x", worker_session_id="w", worker_commit=0)
    # A deleted parent is gone for callers; its rows stay while a fork reads them.
    store.delete("acme", "p")
    with pytest.raises(AgentSessionNotFound):
        store.get("acme", "p")
    assert store.step_entries("acme", "f", 1)[0].content == "question 1"
    assert [s.id for s in store.list("acme", 10)] == ["f", "g"]
    store.delete("acme", "g")
    store.delete("acme", "f")  # the last reader: the parent's rows go too
    with store.sessions() as s:
        assert s.scalar(sqlalchemy.select(sqlalchemy.func.count()).select_from(TranscriptEntry)) == 0


def test_a_call_that_needs_approval_waits_for_a_decision(store):
    store.create("acme", "s")
    append(store, "s", [Entry(ASSISTANT, "deleting"), Entry(TOOL_CALL, tool_call_id="c1", tool_name="rm",
                                                            arguments={}, awaits_approval=True)])
    assert [(c.tool_call_id, c.call_status) for c in store.open_calls("acme", "s")] == [("c1", "awaiting")]
    store.decide("acme", "s", "c1", approve=False)
    assert store.open_calls("acme", "s")[0].call_status == "rejected"
    with pytest.raises(NotDecidable):
        store.decide("acme", "s", "c1", approve=True)  # decided already
    with pytest.raises(AgentSessionNotFound):
        store.decide("other", "s", "c1", approve=True)


def test_turns_one_at_a_time_with_heartbeats_cancels_and_events(store):
    turns = TurnStore(store.sessions, stale_after_s=30)
    store.create("acme", "s")
    turn = turns.start("acme", "s", "t1", owner="runtime-a", request={"messages": []})
    assert turn.status == "running"
    with pytest.raises(TurnActive):
        turns.start("acme", "s", "t2", owner="runtime-b", request={})
    turns.choose_mode("acme", "t1", "think-high", "declared normal", False)
    turns.add_events("acme", "t1", [(0, "mode_chosen", {"mode": "think-high"}), (2, "step_started", {"step": 1})])
    assert [e.seq for e in turns.events("acme", "t1", after=0)] == [2]
    assert not turns.heartbeat("acme", "t1", "runtime-a", status="awaiting_approval")
    assert turns.cancel("acme", "t1").cancel_requested and turns.heartbeat("acme", "t1", "runtime-a")
    assert not turns.finish("acme", "t1", "runtime-b", "done")  # not its owner
    assert turns.finish("acme", "t1", "runtime-a", "cancelled", stop_reason="cancelled", usage={"completion_tokens": 3})
    assert turns.get("acme", "t1").status == "cancelled"
    with pytest.raises(TurnNotFound):
        turns.get("other", "t1")
    # A turn whose runtime died (stale heartbeat) is an orphan; a new turn on its session interrupts it.
    turns.start("acme", "s", "t3", owner="runtime-a", request={})
    with store.sessions.begin() as s:
        s.execute(sqlalchemy.update(TurnRecord).values(heartbeat_at=utcnow() - dt.timedelta(minutes=5)))
    assert [t.id for t in turns.orphans()] == ["t3"] and turns.orphaned(turns.get("acme", "t3"))
    turns.start("acme", "s", "t4", owner="runtime-b", request={})
    assert turns.get("acme", "t3").status == "interrupted" and turns.orphans() == []
    with store.sessions.begin() as s:
        s.execute(sqlalchemy.update(TurnRecord).where(TurnRecord.id == "t4").values(
            heartbeat_at=utcnow() - dt.timedelta(minutes=5)))
    assert turns.resume("acme", "t4", owner="runtime-c").owner == "runtime-c"  # adopted after a restart
    with pytest.raises(TurnActive):
        turns.resume("acme", "t4", owner="runtime-d")  # its new owner is alive
    assert [t.id for t in turns.list("acme", "s")] == ["t4", "t3", "t1"]


def test_a_steps_database_work_does_not_grow_with_the_history(store):
    store.create("acme", "fresh")
    store.create("acme", "long")
    history = 20_000
    with store.sessions.begin() as s:  # synthetic history (labelled): rows as a long agent run leaves them
        s.execute(sqlalchemy.insert(TranscriptEntry), [
            {"tenant": "acme", "session_id": "long", "seq": i, "kind": "user" if i % 2 else "tool_result",
             "step": i // 4, "content": f"row {i}", "created_at": utcnow()} for i in range(history)])
        s.execute(sqlalchemy.update(sqlalchemy.table("agent_sessions", sqlalchemy.column("id"),
                                                     sqlalchemy.column("next_seq"), sqlalchemy.column("steps")))
                  .where(sqlalchemy.column("id") == "long").values(next_seq=history, steps=history // 4))
    engine = store.sessions.kw["bind"]
    executed: list[str] = []
    sqlalchemy.event.listen(engine, "before_cursor_execute",
                            lambda conn, cursor, statement, *rest: executed.append(statement))

    def work(session: str) -> tuple[int, int, int]:
        executed.clear()
        before = (store.stats.rows_read, store.stats.rows_written)
        a_step(store, session, 1)
        calls = store.open_calls("acme", session)
        return len(executed), store.stats.rows_read - before[0], store.stats.rows_written - before[1], len(calls)

    # The same statements, rows returned and rows written, whatever the history.
    assert work("long") == work("fresh")
    if engine.dialect.name == "postgresql":  # and the database finds open calls through the index, not a scan
        with engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE transcript")
            plan = "\n".join(row[0] for row in connection.exec_driver_sql(
                "EXPLAIN SELECT * FROM transcript WHERE tenant = 'acme' AND session_id = 'long' "
                "AND call_status = 'started'"))
        assert "ix_transcript_open_calls" in plan, plan


def test_the_migrations_build_the_models_schema(store):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from agent_runtime.store.tables import Base

    with store.sessions().connection() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": "agent_runtime_alembic_version"})
        assert compare_metadata(context, Base.metadata) == []
