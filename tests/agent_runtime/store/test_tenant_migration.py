"""Revision 0003 on a database revision 0002 left with rows in it (SQLite and PostgreSQL): every row keeps its
session's or turn's tenant, forks and events included, the same IDs become free for other tenants, and a downgrade
is refused while two tenants share an ID (and works, both ways, when none do)."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.config import Config
from realparts import fresh_postgres

from agent_runtime.store.transcript import MIGRATIONS, AgentSessionNotFound, TranscriptStore
from agent_runtime.store.turns import TurnStore
from foundation.sql import make_engine, sessions

STAMP = "2025-01-01 00:00:00"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/agent.db"
        return
    with fresh_postgres("agent") as url:
        yield url


def migrate(url: str, revision: str, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    (command.downgrade if down else command.upgrade)(config, revision)


def rows_as_0002_left_them(engine) -> None:
    session = ("INSERT INTO agent_sessions (id, tenant, system_prompt, tools, think_max, next_seq, steps, failures, "
               "parent_id, fork_seq, deleted, created_at, updated_at) VALUES ('{id}', '{tenant}', '', '[]', false, "
               "{next_seq}, 1, 0, {parent}, {fork_seq}, false, '{stamp}', '{stamp}')")
    entry = ("INSERT INTO transcript (session_id, seq, kind, step, content, is_error, created_at) "
             "VALUES ('{session}', {seq}, 'user', 1, '{content}', false, '{stamp}')")
    with engine.begin() as connection:
        for sql in (session.format(id="trip", tenant="acme", next_seq=2, parent="NULL", fork_seq="NULL", stamp=STAMP),
                    session.format(id="fork", tenant="acme", next_seq=2, parent="'trip'", fork_seq=1, stamp=STAMP),
                    session.format(id="solo", tenant="other", next_seq=1, parent="NULL", fork_seq="NULL", stamp=STAMP),
                    entry.format(session="trip", seq=0, content="to Lima", stamp=STAMP),
                    entry.format(session="trip", seq=1, content="and back", stamp=STAMP),
                    entry.format(session="fork", seq=1, content="to Quito", stamp=STAMP),
                    entry.format(session="solo", seq=0, content="alone", stamp=STAMP),
                    "INSERT INTO steps (session_id, step, turn_id, mode, worker_session_id, worker_commit, first_seq, "
                    f"created_at) VALUES ('trip', 1, 't1', 'non-think', 'agent-w', 3, 0, '{STAMP}')",
                    "INSERT INTO turns (id, session_id, tenant, status, via_job, content, usage, heartbeat_at, "
                    "cancel_requested, next_event, first_step, request, created_at) VALUES ('t1', 'trip', 'acme', "
                    f"'done', false, 'ok', '{{}}', '{STAMP}', false, 2, 1, '{{}}', '{STAMP}')",
                    "INSERT INTO turn_events (turn_id, seq, kind, payload, created_at) "
                    f"VALUES ('t1', 1, 'step_started', '{{\"step\": 1}}', '{STAMP}')"):
            connection.exec_driver_sql(sql)


def test_an_existing_database_upgrades_to_per_tenant_keys(url):
    migrate(url, "0002")
    engine = make_engine(url)
    rows_as_0002_left_them(engine)
    migrate(url, "head")
    store, turns = TranscriptStore(sessions(engine)), TurnStore(sessions(engine))
    assert [e.content for e in store.page("acme", "trip")] == ["to Lima", "and back"]
    assert [e.content for e in store.page("acme", "fork")] == ["to Lima", "to Quito"]  # through its parent
    assert store.step_record("acme", "trip", 1).worker_session_id == "agent-w"
    assert turns.get("acme", "t1").content == "ok" and [e.seq for e in turns.events("acme", "t1", -1)] == [1]
    with pytest.raises(AgentSessionNotFound):
        store.get("other", "trip")
    store.create("other", "trip")  # the name is acme's only
    with pytest.raises(RuntimeError, match="two tenants"):
        migrate(url, "0002", down=True)
    store.delete("other", "trip")  # no fork reads it: its row goes
    migrate(url, "0002", down=True)
    migrate(url, "head")
    assert [e.content for e in store.page("acme", "fork")] == ["to Lima", "to Quito"]
    assert [s.id for s in store.list("other", 10)] == ["solo"]
    engine.dispose()
