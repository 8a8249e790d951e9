"""Alembic environment: the URL comes from the config the caller builds (services.jobs.db.upgrade)."""

from alembic import context
from sqlalchemy import create_engine

from agent_runtime.store.models import Base

config = context.config
VERSION_TABLE = "agent_runtime_alembic_version"  # its own, so the jobs migrations can share the database


def run() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, version_table=VERSION_TABLE)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                          version_table=VERSION_TABLE)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
