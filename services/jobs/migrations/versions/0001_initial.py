"""batches, requests, results and the usage ledger

Revision ID: 0001
Revises: (none)
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER primary keys only

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('batches',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('tenant', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('endpoint', sa.String(length=64), nullable=False),
    sa.Column('completion_window_s', sa.Integer(), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('completed', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=False),
    sa.Column('invalid_lines', JSON, nullable=False),
    sa.Column('metadata', JSON, nullable=False),
    sa.Column('webhook_url', sa.Text(), nullable=True),
    sa.Column('trace_context', JSON, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('in_progress_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finalizing_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('failed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('expired_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancelling_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_batches_tenant'), ['tenant'], unique=False)
        batch_op.create_index('ix_batches_tenant_created', ['tenant', 'created_at', 'id'], unique=False)

    op.create_table('usage_ledger',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('tenant', sa.String(length=128), nullable=False),
    sa.Column('batch_id', sa.String(length=64), nullable=False),
    sa.Column('custom_id', sa.String(length=512), nullable=False),
    sa.Column('prompt_tokens', sa.Integer(), nullable=False),
    sa.Column('prefilled_tokens', sa.Integer(), nullable=False),
    sa.Column('reused_tokens', sa.Integer(), nullable=False),
    sa.Column('completion_tokens', sa.Integer(), nullable=False),
    sa.Column('reasoning_tokens', sa.Integer(), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('batch_id', 'custom_id', name='uq_usage_custom_id')
    )
    with op.batch_alter_table('usage_ledger', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_usage_ledger_tenant'), ['tenant'], unique=False)

    op.create_table('batch_requests',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('batch_id', sa.String(length=64), nullable=False),
    sa.Column('custom_id', sa.String(length=512), nullable=False),
    sa.Column('line', sa.Integer(), nullable=False),
    sa.Column('body', JSON, nullable=False),
    sa.Column('queue', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('lease_owner', sa.String(length=128), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('phase', sa.String(length=16), nullable=False),
    sa.Column('tokens_so_far', sa.Integer(), nullable=False),
    sa.Column('enqueued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['batch_id'], ['batches.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('batch_id', 'custom_id', name='uq_request_custom_id')
    )
    with op.batch_alter_table('batch_requests', schema=None) as batch_op:
        batch_op.create_index('ix_requests_batch_status', ['batch_id', 'status'], unique=False)
        batch_op.create_index('ix_requests_status_lease', ['status', 'lease_expires_at'], unique=False)

    op.create_table('results',
    sa.Column('request_id', ID, nullable=False),
    sa.Column('batch_id', sa.String(length=64), nullable=False),
    sa.Column('custom_id', sa.String(length=512), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('response', JSON, nullable=True),
    sa.Column('error', JSON, nullable=True),
    sa.Column('output_ref', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['request_id'], ['batch_requests.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('request_id')
    )
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_results_batch_id'), ['batch_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_results_batch_id'))

    op.drop_table('results')
    with op.batch_alter_table('batch_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_requests_status_lease')
        batch_op.drop_index('ix_requests_batch_status')

    op.drop_table('batch_requests')
    with op.batch_alter_table('usage_ledger', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_usage_ledger_tenant'))

    op.drop_table('usage_ledger')
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_index('ix_batches_tenant_created')
        batch_op.drop_index(batch_op.f('ix_batches_tenant'))

    op.drop_table('batches')
