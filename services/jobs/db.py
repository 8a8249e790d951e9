"""The jobs database: Alembic migrations (services/jobs/migrations) create and upgrade its tables."""

from __future__ import annotations

from pathlib import Path

from foundation.sql import make_engine, migrate, sessions

MIGRATIONS = Path(__file__).parent / "migrations"


def upgrade(url: str) -> None:
    """Bring the jobs tables of the database at `url` to the newest schema."""
    migrate(url, MIGRATIONS)


__all__ = ["MIGRATIONS", "make_engine", "sessions", "upgrade"]
