"""What the platform's SQL stores share: engines (PostgreSQL, or SQLite embedded), Alembic upgrades, and column
types that behave the same on both: text and JSON (JSONB on PostgreSQL) that take any string, and aware UTC
timestamps."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from alembic import command, context
from alembic.config import Config
from sqlalchemy import JSON, DateTime, Engine, create_engine, event
from sqlalchemy import Text as PlainText
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import sessionmaker
from sqlalchemy.types import TypeDecorator

_NUL, _REPLACEMENT = "\x00", "\ufffd"


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace(_NUL, _REPLACEMENT)
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nul(v) for v in value]
    return value


class Text(TypeDecorator):
    """Text PostgreSQL can hold. It refuses the NUL character, which clients may not send (foundation/storable.py)
    but a model's reply or a tool's output (a binary file read) may carry: stored as U+FFFD instead of failing the
    write."""

    impl = PlainText
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect) -> str | None:
        return _without_nul(value)


class JSONType(TypeDecorator):
    """JSON (JSONB on PostgreSQL, which refuses \\u0000 in strings): NUL characters stored as U+FFFD."""

    impl = JSON().with_variant(JSONB(), "postgresql")
    cache_ok = True

    def process_bind_param(self, value: Any, dialect) -> Any:
        return _without_nul(value)


class Timestamp(TypeDecorator):
    """Aware UTC datetimes everywhere: PostgreSQL keeps the zone; SQLite stores naive UTC text, which still
    compares in order, and gets the zone back on reading."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must carry a time zone")
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect) -> dt.datetime | None:
        return value.replace(tzinfo=dt.timezone.utc) if value is not None and value.tzinfo is None else value

# A database that does not answer (down, restarting, unreachable): the caller may try again; never its own mistake.
UNREACHABLE = (OperationalError, InterfaceError)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection, _record) -> None:  # concurrent readers, one writer, real foreign keys
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
            # pysqlite would open a transaction only at the first write, after the reads it depends on: two
            # read-modify-writes (a batch's counters) then both commit and one update is lost. SQLite has no
            # SELECT ... FOR UPDATE; a transaction that takes the write lock when it begins is the equivalent.
            connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True)


def sessions(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


def migrate(url: str, migrations: Path) -> None:
    """Bring the tables of the Alembic environment at `migrations` in the database at `url` to their newest schema."""
    config = Config()
    config.set_main_option("script_location", str(migrations))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")


def run_migrations(metadata, version_table: str) -> None:
    """The body of an Alembic env.py: migrate the URL the caller configured (`migrate`), recording versions in the
    store's own table so several stores can share one database."""
    url = context.config.get_main_option("sqlalchemy.url")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True, version_table=version_table)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                          version_table=version_table)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
