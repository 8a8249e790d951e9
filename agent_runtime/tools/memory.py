"""A key-value memory an agent keeps across turns: bounded keys, values and size; one namespace per agent session."""

from __future__ import annotations

import threading
from typing import Protocol

MAX_KEY = 128
MAX_VALUE = 16 << 10
MAX_KEYS = 1000


class Memory(Protocol):
    def set(self, namespace: str, key: str, value: str) -> str: ...
    def get(self, namespace: str, key: str) -> str: ...
    def delete(self, namespace: str, key: str) -> str: ...
    def keys(self, namespace: str, prefix: str = "") -> list[str]: ...


def check(key: str, value: str) -> None:
    if not 0 < len(key) <= MAX_KEY or len(value.encode()) > MAX_VALUE:
        raise ValueError(f"keys of 1 to {MAX_KEY} characters, values up to {MAX_VALUE} bytes")


class KeyValueMemory:
    """In process (tests, embedding); agent_runtime.store.memory.SqlMemory keeps it in the runtime's database."""

    def __init__(self) -> None:
        self._data: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def set(self, namespace: str, key: str, value: str) -> str:
        check(key, value)
        with self._lock:
            space = self._data.setdefault(namespace, {})
            if key not in space and len(space) >= MAX_KEYS:
                raise ValueError(f"the memory holds {MAX_KEYS} keys already; delete some first")
            space[key] = value
        return "stored"

    def get(self, namespace: str, key: str) -> str:
        with self._lock:
            value = self._data.get(namespace, {}).get(key)
        if value is None:
            raise KeyError(f"nothing stored under {key!r}")
        return value

    def delete(self, namespace: str, key: str) -> str:
        with self._lock:
            existed = self._data.get(namespace, {}).pop(key, None) is not None
        return "deleted" if existed else "nothing to delete"

    def keys(self, namespace: str, prefix: str = "") -> list[str]:
        with self._lock:
            return sorted(k for k in self._data.get(namespace, {}) if k.startswith(prefix))
