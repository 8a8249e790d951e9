"""the responses naming a worker session, found by index (deleting a response asks whether others still need it)

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_gateway_responses_session", "gateway_responses", ["tenant", "worker_session_id"])


def downgrade() -> None:
    op.drop_index("ix_gateway_responses_session", table_name="gateway_responses")
