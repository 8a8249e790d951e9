"""agent sessions and their transcript

Revision ID: 0001
Revises: (none)
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('agent_sessions',
    sa.Column('id', sa.String(length=128), nullable=False),
    sa.Column('tenant', sa.String(length=128), nullable=False),
    sa.Column('system_prompt', sa.Text(), nullable=False),
    sa.Column('tools', JSON, nullable=False),
    sa.Column('worker_session_id', sa.String(length=128), nullable=True),
    sa.Column('worker_commit', ID, nullable=True),
    sa.Column('think_max', sa.Boolean(), nullable=False),
    sa.Column('next_seq', ID, nullable=False),
    sa.Column('steps', sa.Integer(), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('parent', sa.String(length=160), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('agent_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agent_sessions_tenant'), ['tenant'], unique=False)

    op.create_table('transcript',
    sa.Column('session_id', sa.String(length=128), nullable=False),
    sa.Column('seq', ID, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('reasoning', sa.Text(), nullable=True),
    sa.Column('tool_call_id', sa.String(length=128), nullable=True),
    sa.Column('tool_name', sa.String(length=128), nullable=True),
    sa.Column('arguments', JSON, nullable=True),
    sa.Column('call_status', sa.String(length=16), nullable=True),
    sa.Column('idempotency_key', sa.String(length=160), nullable=True),
    sa.Column('is_error', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['session_id'], ['agent_sessions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('session_id', 'seq')
    )
    with op.batch_alter_table('transcript', schema=None) as batch_op:
        batch_op.create_index('ix_transcript_open_calls', ['session_id', 'call_status'], unique=False)
        batch_op.create_index('ix_transcript_step', ['session_id', 'step'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('transcript', schema=None) as batch_op:
        batch_op.drop_index('ix_transcript_step')
        batch_op.drop_index('ix_transcript_open_calls')

    op.drop_table('transcript')
    with op.batch_alter_table('agent_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agent_sessions_tenant'))

    op.drop_table('agent_sessions')
