"""Agent sessions and transcripts in SQL (SQLite and PostgreSQL): steps appended whole, tool results closing their
calls, open calls found after a crash, the tail read in pages, and a step's database work the same at 20,000 rows of
history as at none."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy

from agent_runtime.store.models import ASSISTANT, INTERRUPTED, TOOL_CALL, USER, TranscriptEntry
from agent_runtime.store.transcript import AgentSessionNotFound, Entry, TranscriptStore, upgrade
from services.sql import make_engine, sessions, utcnow

PG = "postgresql+psycopg://postgres@127.0.0.1:5432"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/agent.db"
        upgrade(url)
        yield TranscriptStore(sessions(make_engine(url)))
        return
    admin = sqlalchemy.create_engine(f"{PG}/test", isolation_level="AUTOCOMMIT")
    try:
        admin.connect().close()
    except Exception:  # noqa: BLE001
        pytest.skip("no PostgreSQL at 127.0.0.1:5432")
    name = f"agent_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    upgrade(f"{PG}/{name}")
    engine = make_engine(f"{PG}/{name}")
    yield TranscriptStore(sessions(engine))
    engine.dispose()
    with admin.connect() as connection:
        connection.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")


def a_step(store: TranscriptStore, session: str, n: int) -> None:
    store.append_step("acme", session, [Entry(USER, f"question {n}"), Entry(ASSISTANT, "let me look", "hmm"),
                                        Entry(TOOL_CALL, tool_call_id=f"c{n}", tool_name="lookup",
                                              arguments={"q": n}, idempotency_key=f"{session}/c{n}")])
    store.finish_call("acme", session, f"c{n}", Entry("tool_result", content=f"answer {n}"))


def test_steps_calls_and_pages(store):
    store.create("acme", "s1", system_prompt="be brief", tools=[{"type": "function", "function": {"name": "x"}}])
    a_step(store, "s1", 1)
    seqs = store.append_step("acme", "s1", [Entry(USER, "and?"), Entry(TOOL_CALL, tool_call_id="c2",
                                                                       tool_name="lookup", arguments={})])
    assert seqs == [4, 5]
    assert [e.tool_call_id for e in store.open_calls("s1")] == ["c2"]  # started, not finished: a crash here
    store.finish_call("acme", "s1", "c2", Entry("tool_result", content="interrupted", is_error=True),
                      status=INTERRUPTED)
    assert store.open_calls("s1") == []
    tail = store.page("s1", limit=3)
    assert [(e.seq, e.kind) for e in tail] == [(4, "user"), (5, "tool_call"), (6, "tool_result")]
    assert [e.seq for e in store.page("s1", before=tail[0].seq, limit=10)] == [0, 1, 2, 3]
    assert store.get("acme", "s1").steps == 2
    with pytest.raises(AgentSessionNotFound):
        store.get("other", "s1")
    with pytest.raises(AgentSessionNotFound):
        store.append_step("other", "s1", [Entry(USER, "x")])


def test_a_steps_database_work_does_not_grow_with_the_history(store):
    store.create("acme", "fresh")
    store.create("acme", "long")
    history = 20_000
    with store.sessions.begin() as s:  # synthetic history (labelled): rows as a long agent run leaves them
        s.execute(sqlalchemy.insert(TranscriptEntry), [
            {"session_id": "long", "seq": i, "kind": "user" if i % 2 else "tool_result", "step": i // 4,
             "content": f"row {i}", "created_at": utcnow()} for i in range(history)])
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
        calls = store.open_calls(session)
        return len(executed), store.stats.rows_read - before[0], store.stats.rows_written - before[1], len(calls)

    # The same statements, rows returned and rows written, whatever the history.
    assert work("long") == work("fresh")
    if engine.dialect.name == "postgresql":  # and the database finds open calls through the index, not a scan
        with engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE transcript")
            plan = "\n".join(row[0] for row in connection.exec_driver_sql(
                "EXPLAIN SELECT * FROM transcript WHERE session_id = 'long' AND call_status = 'started'"))
        assert "ix_transcript_open_calls" in plan, plan


def test_the_migrations_build_the_models_schema(store):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from agent_runtime.store.models import Base

    with store.sessions().connection() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": "agent_runtime_alembic_version"})
        assert compare_metadata(context, Base.metadata) == []
