"""The key-value memory tool's store in the agent runtime's database: the same interface and bounds as the
in-process KeyValueMemory, so an agent's memory survives restarts and is shared by every runtime process."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.orm import sessionmaker

from agent_runtime.store.tables import MemoryItem
from agent_runtime.tools.memory import MAX_KEYS, check


class SqlMemory:
    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions

    def set(self, namespace: str, key: str, value: str) -> str:
        check(key, value)
        with self.sessions.begin() as s:
            item = s.get(MemoryItem, (namespace, key), with_for_update=True)
            if item is not None:
                item.value = value
                return "stored"
            count = s.scalar(select(func.count()).select_from(MemoryItem).where(MemoryItem.namespace == namespace))
            if count >= MAX_KEYS:
                raise ValueError(f"the memory holds {MAX_KEYS} keys already; delete some first")
            s.add(MemoryItem(namespace=namespace, key=key, value=value))
        return "stored"

    def get(self, namespace: str, key: str) -> str:
        with self.sessions() as s:
            item = s.get(MemoryItem, (namespace, key))
        if item is None:
            raise KeyError(f"nothing stored under {key!r}")
        return item.value

    def delete(self, namespace: str, key: str) -> str:
        with self.sessions.begin() as s:
            deleted = s.execute(delete(MemoryItem).where(MemoryItem.namespace == namespace,
                                                         MemoryItem.key == key)).rowcount
        return "deleted" if deleted else "nothing to delete"

    def keys(self, namespace: str, prefix: str = "") -> list[str]:
        with self.sessions() as s:
            query = select(MemoryItem.key).where(MemoryItem.namespace == namespace)
            if prefix:
                query = query.where(MemoryItem.key.startswith(prefix, autoescape=True))
            return list(s.scalars(query.order_by(MemoryItem.key)))
