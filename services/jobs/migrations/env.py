"""Alembic environment of the jobs tables (the URL comes from services.sql.migrate)."""

from services.jobs.models import Base
from services.sql import run_migrations

run_migrations(Base.metadata, version_table="jobs_alembic_version")
