"""Alembic environment of the gateway's tables (the URL comes from services.sql.migrate)."""

from services.gateway.store import Base
from services.sql import run_migrations

run_migrations(Base.metadata, version_table="gateway_alembic_version")
