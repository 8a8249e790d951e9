"""turns and their events, steps with their worker commits, forks sharing their parent's rows, the worker serving
each session, the memory tool's values

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
STAMP = sa.DateTime(timezone=True)

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('agent_sessions') as batch:  # SQLite rebuilds the table
        batch.drop_column('parent')
        batch.add_column(sa.Column('parent_id', sa.String(length=128), nullable=True))
        batch.add_column(sa.Column('fork_seq', ID, nullable=True))
        batch.add_column(sa.Column('active_turn', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('worker_address', sa.String(length=256), nullable=True))
        batch.add_column(sa.Column('deleted', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.create_foreign_key('fk_agent_sessions_parent', 'agent_sessions', ['parent_id'], ['id'])
        batch.create_index('ix_agent_sessions_parent_id', ['parent_id'])
    with op.batch_alter_table('agent_sessions') as batch:
        batch.alter_column('deleted', server_default=None)
    op.create_table('agent_memory',
    sa.Column('namespace', sa.String(length=300), nullable=False),
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('namespace', 'key')
    )
    op.create_table('steps',
    sa.Column('session_id', sa.String(length=128), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('turn_id', sa.String(length=64), nullable=True),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('worker_session_id', sa.String(length=128), nullable=False),
    sa.Column('worker_commit', ID, nullable=False),
    sa.Column('first_seq', ID, nullable=False),
    sa.Column('created_at', STAMP, nullable=False),
    sa.ForeignKeyConstraint(['session_id'], ['agent_sessions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('session_id', 'step')
    )
    op.create_table('turns',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('session_id', sa.String(length=128), nullable=False),
    sa.Column('tenant', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=24), nullable=False),
    sa.Column('mode', sa.String(length=16), nullable=True),
    sa.Column('mode_reason', sa.Text(), nullable=True),
    sa.Column('via_job', sa.Boolean(), nullable=False),
    sa.Column('stop_reason', sa.String(length=24), nullable=True),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('usage', JSON, nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('owner', sa.String(length=64), nullable=True),
    sa.Column('heartbeat_at', STAMP, nullable=False),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('next_event', ID, nullable=False),
    sa.Column('first_step', sa.Integer(), nullable=False),
    sa.Column('request', JSON, nullable=False),
    sa.Column('created_at', STAMP, nullable=False),
    sa.Column('ended_at', STAMP, nullable=True),
    sa.ForeignKeyConstraint(['session_id'], ['agent_sessions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_turns_session', 'turns', ['session_id', 'created_at'], unique=False)
    op.create_index('ix_turns_active', 'turns', ['status', 'heartbeat_at'], unique=False)
    op.create_table('turn_events',
    sa.Column('turn_id', sa.String(length=64), nullable=False),
    sa.Column('seq', ID, nullable=False),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('payload', JSON, nullable=False),
    sa.Column('created_at', STAMP, nullable=False),
    sa.ForeignKeyConstraint(['turn_id'], ['turns.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('turn_id', 'seq')
    )


def downgrade() -> None:
    op.drop_table('turn_events')
    op.drop_index('ix_turns_active', table_name='turns')
    op.drop_index('ix_turns_session', table_name='turns')
    op.drop_table('turns')
    op.drop_table('steps')
    op.drop_table('agent_memory')
    with op.batch_alter_table('agent_sessions') as batch:
        batch.drop_index('ix_agent_sessions_parent_id')
        batch.drop_constraint('fk_agent_sessions_parent', type_='foreignkey')
        batch.drop_column('deleted')
        batch.drop_column('worker_address')
        batch.drop_column('active_turn')
        batch.drop_column('fork_seq')
        batch.drop_column('parent_id')
        batch.add_column(sa.Column('parent', sa.String(length=160), nullable=True))
