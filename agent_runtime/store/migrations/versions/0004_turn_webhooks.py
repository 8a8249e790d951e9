"""turn webhooks: each turn event to deliver (its claims and outcome) and each tenant's signing secret (a table
apart from the jobs service's `webhook_secrets`: the two may share a database)

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

STAMP = sa.DateTime(timezone=True)

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'turn_webhooks',
        sa.Column('tenant', sa.String(length=256), nullable=False),
        sa.Column('event_id', sa.String(length=160), nullable=False),
        sa.Column('turn_id', sa.String(length=128), nullable=False),
        sa.Column('url', sa.Text(), nullable=False), sa.Column('body', sa.Text(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False), sa.Column('next_at', STAMP, nullable=False),
        sa.Column('delivered_at', STAMP, nullable=True), sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('created_at', STAMP, nullable=False),
        sa.PrimaryKeyConstraint('tenant', 'event_id', name='pk_turn_webhooks'))
    op.create_index('ix_turn_webhooks_due', 'turn_webhooks', ['delivered_at', 'next_at'])
    op.create_table(
        'turn_webhook_secrets',
        sa.Column('tenant', sa.String(length=256), nullable=False), sa.Column('secret', sa.Text(), nullable=False),
        sa.Column('previous_secret', sa.Text(), nullable=True), sa.Column('previous_until', STAMP, nullable=True),
        sa.Column('created_at', STAMP, nullable=False), sa.Column('rotated_at', STAMP, nullable=True),
        sa.PrimaryKeyConstraint('tenant'))


def downgrade() -> None:
    op.drop_table('turn_webhook_secrets')
    op.drop_index('ix_turn_webhooks_due', table_name='turn_webhooks')
    op.drop_table('turn_webhooks')
