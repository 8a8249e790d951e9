"""Alembic environment of the agent runtime's tables (the URL comes from foundation.sql.migrate)."""

from agent_runtime.store.tables import Base
from foundation.sql import run_migrations

run_migrations(Base.metadata, version_table="agent_runtime_alembic_version")
