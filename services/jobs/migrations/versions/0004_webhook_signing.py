"""webhook signing secrets per tenant, and why a batch's last webhook attempt failed

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("webhook_secrets",
                    sa.Column("tenant", sa.String(length=128), nullable=False),
                    sa.Column("secret", sa.Text(), nullable=False),
                    sa.Column("previous_secret", sa.Text(), nullable=True),
                    sa.Column("previous_until", sa.DateTime(timezone=True), nullable=True),
                    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
                    sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
                    sa.PrimaryKeyConstraint("tenant"))
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("webhook_last_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("webhook_last_error")
    op.drop_table("webhook_secrets")
