"""The SQL stores' shared engine: on SQLite (the embedded default), concurrent read-modify-write transactions must not
lose updates, as SELECT ... FOR UPDATE guarantees on PostgreSQL."""

from __future__ import annotations

import threading

from sqlalchemy import Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from foundation.sql import make_engine, sessions


class Base(DeclarativeBase):
    pass


class Counter(Base):
    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


def test_concurrent_increments_on_sqlite_are_all_kept(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'counters.db'}")
    Base.metadata.create_all(engine)
    db = sessions(engine)
    with db.begin() as s:
        s.add(Counter(name="done", value=0))

    def add(times: int) -> None:
        for _ in range(times):
            with db.begin() as s:
                row = s.get(Counter, "done", with_for_update=True)
                row.value += 1

    threads = [threading.Thread(target=add, args=(25,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with db() as s:
        assert s.get(Counter, "done").value == 100
    engine.dispose()
