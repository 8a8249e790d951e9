"""every agent table keyed by (tenant, id): session and turn IDs are each tenant's own; IDs up to 128 characters,
tenants up to 256; the memory tool's namespaces as long as a tenant and a session ID, idempotency keys naming the
tenant

Revision ID: 0003
Revises: 0002

The tables are rebuilt (the old ones renamed aside, the new ones created, rows copied with their session's or turn's
tenant, the old ones dropped) the same way on SQLite and PostgreSQL: changing a primary key in place differs between
them and, on SQLite, needs the foreign keys named, which the earlier revisions left to the database. A downgrade is
refused while two tenants use the same session or turn ID (the old keys cannot hold both).
"""

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
STAMP = sa.DateTime(timezone=True)
TENANT, NAME = sa.String(length=256), sa.String(length=128)

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

TABLES = ("agent_sessions", "transcript", "steps", "turns", "turn_events")  # parents first
OLD_INDEXES = {"agent_sessions": ("ix_agent_sessions_tenant", "ix_agent_sessions_parent_id"),
               "transcript": ("ix_transcript_open_calls", "ix_transcript_step"),
               "turns": ("ix_turns_session", "ix_turns_active")}
NEW_INDEXES = {"agent_sessions": ("ix_agent_sessions_parent",),
               "transcript": ("ix_transcript_open_calls", "ix_transcript_step"),
               "turns": ("ix_turns_session", "ix_turns_active")}


def _session_columns() -> list[sa.Column]:
    return [sa.Column('system_prompt', sa.Text(), nullable=False), sa.Column('tools', JSON, nullable=False),
            sa.Column('worker_session_id', NAME, nullable=True), sa.Column('worker_commit', ID, nullable=True),
            sa.Column('worker_address', sa.String(length=256), nullable=True),
            sa.Column('think_max', sa.Boolean(), nullable=False), sa.Column('next_seq', ID, nullable=False),
            sa.Column('steps', sa.Integer(), nullable=False), sa.Column('failures', sa.Integer(), nullable=False),
            sa.Column('parent_id', NAME, nullable=True), sa.Column('fork_seq', ID, nullable=True),
            sa.Column('active_turn', NAME, nullable=True), sa.Column('deleted', sa.Boolean(), nullable=False),
            sa.Column('created_at', STAMP, nullable=False), sa.Column('updated_at', STAMP, nullable=False)]


def _entry_columns(key_chars: int = 640) -> list[sa.Column]:
    return [sa.Column('kind', sa.String(length=16), nullable=False), sa.Column('step', sa.Integer(), nullable=False),
            sa.Column('content', sa.Text(), nullable=False), sa.Column('reasoning', sa.Text(), nullable=True),
            sa.Column('tool_call_id', NAME, nullable=True), sa.Column('tool_name', NAME, nullable=True),
            sa.Column('arguments', JSON, nullable=True), sa.Column('call_status', sa.String(length=16), nullable=True),
            sa.Column('idempotency_key', sa.String(length=key_chars), nullable=True),
            sa.Column('is_error', sa.Boolean(), nullable=False), sa.Column('created_at', STAMP, nullable=False)]


def _step_columns() -> list[sa.Column]:
    return [sa.Column('turn_id', NAME, nullable=True), sa.Column('mode', sa.String(length=16), nullable=False),
            sa.Column('worker_session_id', NAME, nullable=False), sa.Column('worker_commit', ID, nullable=False),
            sa.Column('first_seq', ID, nullable=False), sa.Column('created_at', STAMP, nullable=False)]


def _turn_columns() -> list[sa.Column]:
    return [sa.Column('status', sa.String(length=24), nullable=False),
            sa.Column('mode', sa.String(length=16), nullable=True), sa.Column('mode_reason', sa.Text(), nullable=True),
            sa.Column('via_job', sa.Boolean(), nullable=False),
            sa.Column('stop_reason', sa.String(length=24), nullable=True),
            sa.Column('content', sa.Text(), nullable=False), sa.Column('usage', JSON, nullable=False),
            sa.Column('error', sa.Text(), nullable=True), sa.Column('owner', sa.String(length=64), nullable=True),
            sa.Column('heartbeat_at', STAMP, nullable=False),
            sa.Column('cancel_requested', sa.Boolean(), nullable=False),
            sa.Column('next_event', ID, nullable=False), sa.Column('first_step', sa.Integer(), nullable=False),
            sa.Column('request', JSON, nullable=False), sa.Column('created_at', STAMP, nullable=False),
            sa.Column('ended_at', STAMP, nullable=True)]


def _event_columns() -> list[sa.Column]:
    return [sa.Column('kind', sa.String(length=24), nullable=False), sa.Column('payload', JSON, nullable=False),
            sa.Column('created_at', STAMP, nullable=False)]


def _session_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(['tenant', 'session_id'], ['agent_sessions.tenant', 'agent_sessions.id'],
                                   ondelete='CASCADE', name=f'fk_{table}_session')


def _create_tenant_keyed() -> None:
    op.create_table('agent_sessions', sa.Column('tenant', TENANT, nullable=False),
                    sa.Column('id', NAME, nullable=False), *_session_columns(),
                    sa.PrimaryKeyConstraint('tenant', 'id', name='pk_agent_sessions'),
                    sa.ForeignKeyConstraint(['tenant', 'parent_id'], ['agent_sessions.tenant', 'agent_sessions.id'],
                                            name='fk_agent_sessions_parent'))
    op.create_index('ix_agent_sessions_parent', 'agent_sessions', ['tenant', 'parent_id'])
    op.create_table('transcript', sa.Column('tenant', TENANT, nullable=False),
                    sa.Column('session_id', NAME, nullable=False), sa.Column('seq', ID, nullable=False),
                    *_entry_columns(), sa.PrimaryKeyConstraint('tenant', 'session_id', 'seq', name='pk_transcript'),
                    _session_fk('transcript'))
    op.create_index('ix_transcript_open_calls', 'transcript', ['tenant', 'session_id', 'call_status'])
    op.create_index('ix_transcript_step', 'transcript', ['tenant', 'session_id', 'step'])
    op.create_table('steps', sa.Column('tenant', TENANT, nullable=False),
                    sa.Column('session_id', NAME, nullable=False), sa.Column('step', sa.Integer(), nullable=False),
                    *_step_columns(), sa.PrimaryKeyConstraint('tenant', 'session_id', 'step', name='pk_steps'),
                    _session_fk('steps'))
    op.create_table('turns', sa.Column('tenant', TENANT, nullable=False), sa.Column('id', NAME, nullable=False),
                    sa.Column('session_id', NAME, nullable=False), *_turn_columns(),
                    sa.PrimaryKeyConstraint('tenant', 'id', name='pk_turns'), _session_fk('turns'))
    op.create_index('ix_turns_session', 'turns', ['tenant', 'session_id', 'created_at'])
    op.create_index('ix_turns_active', 'turns', ['status', 'heartbeat_at'])
    op.create_table('turn_events', sa.Column('tenant', TENANT, nullable=False),
                    sa.Column('turn_id', NAME, nullable=False), sa.Column('seq', ID, nullable=False),
                    *_event_columns(), sa.PrimaryKeyConstraint('tenant', 'turn_id', 'seq', name='pk_turn_events'),
                    sa.ForeignKeyConstraint(['tenant', 'turn_id'], ['turns.tenant', 'turns.id'], ondelete='CASCADE',
                                            name='fk_turn_events_turn'))


def _create_global() -> None:
    """The tables as revision 0002 left them."""
    op.create_table('agent_sessions', sa.Column('id', NAME, nullable=False),
                    sa.Column('tenant', sa.String(length=128), nullable=False), *_session_columns(),
                    sa.PrimaryKeyConstraint('id'),
                    sa.ForeignKeyConstraint(['parent_id'], ['agent_sessions.id'], name='fk_agent_sessions_parent'))
    op.create_index('ix_agent_sessions_tenant', 'agent_sessions', ['tenant'])
    op.create_index('ix_agent_sessions_parent_id', 'agent_sessions', ['parent_id'])
    op.create_table('transcript', sa.Column('session_id', NAME, nullable=False), sa.Column('seq', ID, nullable=False),
                    *_entry_columns(160), sa.PrimaryKeyConstraint('session_id', 'seq'),
                    sa.ForeignKeyConstraint(['session_id'], ['agent_sessions.id'], ondelete='CASCADE'))
    op.create_index('ix_transcript_open_calls', 'transcript', ['session_id', 'call_status'])
    op.create_index('ix_transcript_step', 'transcript', ['session_id', 'step'])
    op.create_table('steps', sa.Column('session_id', NAME, nullable=False), sa.Column('step', sa.Integer(),
                                                                                     nullable=False),
                    *_step_columns(), sa.PrimaryKeyConstraint('session_id', 'step'),
                    sa.ForeignKeyConstraint(['session_id'], ['agent_sessions.id'], ondelete='CASCADE'))
    op.create_table('turns', sa.Column('id', sa.String(length=64), nullable=False),
                    sa.Column('session_id', NAME, nullable=False),
                    sa.Column('tenant', sa.String(length=128), nullable=False), *_turn_columns(),
                    sa.PrimaryKeyConstraint('id'),
                    sa.ForeignKeyConstraint(['session_id'], ['agent_sessions.id'], ondelete='CASCADE'))
    op.create_index('ix_turns_session', 'turns', ['session_id', 'created_at'])
    op.create_index('ix_turns_active', 'turns', ['status', 'heartbeat_at'])
    op.create_table('turn_events', sa.Column('turn_id', sa.String(length=64), nullable=False),
                    sa.Column('seq', ID, nullable=False), *_event_columns(),
                    sa.PrimaryKeyConstraint('turn_id', 'seq'),
                    sa.ForeignKeyConstraint(['turn_id'], ['turns.id'], ondelete='CASCADE'))


def _columns(build: Callable[[], list[sa.Column]], table: str = "") -> str:
    """The columns quoted (some are keywords somewhere), each prefixed with `table.` when given."""
    return ", ".join(f'{table}{"." if table else ""}"{c.name}"' for c in build())


def _rebuild(old_indexes: dict[str, tuple[str, ...]], create: Callable[[], None], copies: dict[str, str]) -> None:
    """Old tables aside (their index names freed first: PostgreSQL's are per schema), new ones created, rows
    copied by `copies` (table: SELECT from the `old_*` tables), the old ones dropped."""
    for table, indexes in old_indexes.items():
        for index in indexes:
            op.drop_index(index, table_name=table)
    for table in TABLES:
        op.rename_table(table, f"old_{table}")
    create()
    for table in TABLES:
        op.execute(copies[table])
    for table in reversed(TABLES):
        op.drop_table(f"old_{table}")


def upgrade() -> None:
    session, entry, step = _columns(_session_columns), _columns(_entry_columns), _columns(_step_columns)
    turn, event = _columns(_turn_columns), _columns(_event_columns)
    prefixed = {"entry": _columns(_entry_columns, "x"), "step": _columns(_step_columns, "x"),
                "event": _columns(_event_columns, "x")}
    _rebuild(OLD_INDEXES, _create_tenant_keyed, {
        "agent_sessions": f"INSERT INTO agent_sessions (tenant, id, {session}) "
                          f"SELECT tenant, id, {session} FROM old_agent_sessions",
        "transcript": f"INSERT INTO transcript (tenant, session_id, seq, {entry}) "
                      f"SELECT s.tenant, x.session_id, x.seq, {prefixed['entry']} FROM old_transcript x "
                      f"JOIN old_agent_sessions s ON s.id = x.session_id",
        "steps": f"INSERT INTO steps (tenant, session_id, step, {step}) "
                 f"SELECT s.tenant, x.session_id, x.step, {prefixed['step']} FROM old_steps x "
                 f"JOIN old_agent_sessions s ON s.id = x.session_id",
        "turns": f"INSERT INTO turns (tenant, id, session_id, {turn}) "
                 f"SELECT tenant, id, session_id, {turn} FROM old_turns",
        "turn_events": f"INSERT INTO turn_events (tenant, turn_id, seq, {event}) "
                       f"SELECT t.tenant, x.turn_id, x.seq, {prefixed['event']} FROM old_turn_events x "
                       f"JOIN old_turns t ON t.id = x.turn_id"})
    with op.batch_alter_table('agent_memory') as batch:  # SQLite rebuilds the table
        batch.alter_column('namespace', type_=sa.String(length=385), existing_type=sa.String(length=300),
                           existing_nullable=False)


def downgrade() -> None:
    bind = op.get_bind()
    for table, key in (("agent_sessions", "id"), ("turns", "id")):
        shared = bind.execute(sa.text(f"SELECT {key} FROM {table} GROUP BY {key} HAVING COUNT(*) > 1 LIMIT 1")).first()
        if shared is not None:
            raise RuntimeError(f"cannot downgrade: two tenants use the {table} ID {shared[0]!r}")
    for table, column, chars in (("turns", "id", 64), ("agent_sessions", "tenant", 128), ("turns", "tenant", 128),
                                 ("transcript", "idempotency_key", 160)):
        too_long = bind.execute(sa.text(f"SELECT {column} FROM {table} WHERE LENGTH({column}) > {chars} LIMIT 1"))
        if too_long.first() is not None:
            raise RuntimeError(f"cannot downgrade: {table}.{column} holds values over {chars} characters")
    with op.batch_alter_table('agent_memory') as batch:
        batch.alter_column('namespace', type_=sa.String(length=300), existing_type=sa.String(length=385),
                           existing_nullable=False)
    session, entry, step = _columns(_session_columns), _columns(_entry_columns), _columns(_step_columns)
    turn, event = _columns(_turn_columns), _columns(_event_columns)
    _rebuild(NEW_INDEXES, _create_global, {
        "agent_sessions": f"INSERT INTO agent_sessions (id, tenant, {session}) "
                          f"SELECT id, tenant, {session} FROM old_agent_sessions",
        "transcript": f"INSERT INTO transcript (session_id, seq, {entry}) "
                      f"SELECT session_id, seq, {entry} FROM old_transcript",
        "steps": f"INSERT INTO steps (session_id, step, {step}) SELECT session_id, step, {step} FROM old_steps",
        "turns": f"INSERT INTO turns (id, session_id, tenant, {turn}) "
                 f"SELECT id, session_id, tenant, {turn} FROM old_turns",
        "turn_events": f"INSERT INTO turn_events (turn_id, seq, {event}) "
                       f"SELECT turn_id, seq, {event} FROM old_turn_events"})
