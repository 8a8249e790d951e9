"""Alembic environment of the gateway's tables (the URL comes from foundation.sql.migrate)."""

from foundation.sql import run_migrations
from services.gateway.store import Base

run_migrations(Base.metadata, version_table="gateway_alembic_version")
