"""stored responses and files

Revision ID: 0001
Revises: (none)
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
STAMP = sa.DateTime(timezone=True)

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('gateway_responses',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('tenant', sa.String(length=128), nullable=False),
    sa.Column('model', sa.String(length=256), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('store', sa.Boolean(), nullable=False),
    sa.Column('background', sa.Boolean(), nullable=False),
    sa.Column('previous_response_id', sa.String(length=64), nullable=True),
    sa.Column('worker_address', sa.String(length=256), nullable=True),
    sa.Column('worker_session_id', sa.String(length=128), nullable=True),
    sa.Column('worker_commit', ID, nullable=True),
    sa.Column('batch_id', sa.String(length=64), nullable=True),
    sa.Column('request', JSON, nullable=False),
    sa.Column('body', JSON, nullable=False),
    sa.Column('created_at', STAMP, nullable=False),
    sa.Column('completed_at', STAMP, nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_gateway_responses_tenant', 'gateway_responses', ['tenant', 'created_at'], unique=False)
    op.create_table('gateway_files',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('tenant', sa.String(length=128), nullable=False),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('filename', sa.String(length=512), nullable=False),
    sa.Column('bytes', ID, nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('batch_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', STAMP, nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_gateway_files_tenant', 'gateway_files', ['tenant', 'created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_gateway_files_tenant', table_name='gateway_files')
    op.drop_table('gateway_files')
    op.drop_index('ix_gateway_responses_tenant', table_name='gateway_responses')
    op.drop_table('gateway_responses')
