"""a request's attempts given back (worker unavailable) and its last failed attempt's error

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batch_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("handed_back", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("last_error", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batch_requests", schema=None) as batch_op:
        batch_op.drop_column("last_error")
        batch_op.drop_column("handed_back")
