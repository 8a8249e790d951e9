"""Alembic environment of the agent runtime's tables (the URL comes from services.sql.migrate)."""

from agent_runtime.store.models import Base
from services.sql import run_migrations

run_migrations(Base.metadata, version_table="agent_runtime_alembic_version")
