"""webhook delivery: attempts, next attempt, delivered

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("webhook_attempts", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("webhook_next_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("webhook_delivered_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("webhook_delivered_at")
        batch_op.drop_column("webhook_next_at")
        batch_op.drop_column("webhook_attempts")
