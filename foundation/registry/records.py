"""What a model worker tells the registry about itself on every heartbeat."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class WorkerRecord:
    """A live worker: where clients reach it, what it serves, and how busy it is."""

    address: str
    model: str = ""
    fingerprint: str = ""
    running: int = 0
    waiting: int = 0
    max_running: int = 64
    hot_sessions: int = 0
    hot_bytes: int = 0
    seen: float = 0.0  # the registry's clock at the last heartbeat (seconds since the epoch)

    @property
    def load(self) -> float:
        """Requests per batch slot: above 1 the worker queues."""
        return (self.running + self.waiting) / max(self.max_running, 1)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> WorkerRecord:
        fields = json.loads(text)
        return cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__})
