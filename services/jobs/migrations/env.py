"""Alembic environment of the jobs tables (the URL comes from foundation.sql.migrate)."""

from foundation.sql import run_migrations
from services.jobs.tables import Base

run_migrations(Base.metadata, version_table="jobs_alembic_version")
