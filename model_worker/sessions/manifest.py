"""Key layout and the commit record (docs/session-format.md).

    t/{tenant key}/salt                       the tenant's chain salt (32 random bytes)
    t/{tenant key}/b/{address}                content-addressed values: page groups, token pages, tails
    t/{tenant key}/s/{session id}/meta        claims the ID at creation
    t/{tenant key}/s/{session id}/c/{seq}     commit records, 12-digit sequence numbers, never rewritten

A commit is visible once its record is: every value it names is written first. A record that fails its checksum
(a writer killed mid-write on a store without atomic puts) is skipped, so the previous commit stays current.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass, fields
from typing import Any

from foundation.chat import SessionHead
from foundation.ids import InvalidId, check_id
from model_worker.sessions.errors import CorruptSession, IncompatibleSession, InvalidSessionRequest

FORMAT = "dsv4-session/1"


def tenant_key(tenant: str) -> str:
    """A path-safe, fixed-length name for any tenant string."""
    if not tenant:
        raise InvalidSessionRequest("tenant must be a non-empty string")
    return hashlib.sha256(b"dsv4-tenant\0" + tenant.encode()).hexdigest()[:32]


def check_session_id(session_id: str, kind: str = "session_id") -> str:
    try:
        return check_id(session_id, kind)
    except InvalidId as exc:
        raise InvalidSessionRequest(str(exc)) from None


# The ID prefix of the prefix cache's records (prefix_store.py): sessions of the store, which no client may create
# and listings leave out.
PREFIX_RECORD = "prefix."


def check_new_session_id(session_id: str, kind: str = "session_id") -> str:
    """An ID a client picks for a new session: valid, and not one the prefix cache's records take."""
    if check_session_id(session_id, kind).startswith(PREFIX_RECORD):
        raise InvalidSessionRequest(f"{kind}: IDs that start with {PREFIX_RECORD!r} are reserved")
    return session_id


def salt_key(tk: str) -> str:
    return f"t/{tk}/salt"


def blob_key(tk: str, address: str) -> str:
    return f"t/{tk}/b/{address}"


def session_prefix(tk: str, session_id: str | None = None) -> str:
    return f"t/{tk}/s/" if session_id is None else f"t/{tk}/s/{session_id}/"


def meta_key(tk: str, session_id: str) -> str:
    return session_prefix(tk, session_id) + "meta"


def commit_key(tk: str, session_id: str, seq: int) -> str:
    return session_prefix(tk, session_id) + f"c/{seq:012d}"


Head = SessionHead  # the one head type (foundation.chat.SessionHead), under the name the store has always used


def head_record(head: SessionHead) -> dict[str, Any]:
    """The head as a commit record holds it (no tools: null, as records have always said)."""
    return {"think_max": head.think_max, "system_prompt": head.system_prompt, "tools": head.tools or None,
            "response_format": head.response_format, "head_tokens": head.head_tokens}


@dataclass(frozen=True)
class ChatState:
    """What a commit keeps of the session's chat besides its tokens (model_worker/server/turn.py writes it)."""

    renderer: dict[str, Any] | None = None  # foundation.chat.ChatSession.state(); None: never rendered
    pending: tuple[int, ...] = ()  # tokens owed to the model: the next turn feeds them first

    def to_record(self) -> dict[str, Any]:
        return {"renderer": self.renderer, "pending": list(self.pending)}

    @classmethod
    def from_record(cls, record: Any) -> ChatState:
        """The record's `chat` object (either key may be absent); anything else is a malformed record."""
        renderer, pending = (record.get("renderer"), record.get("pending", [])) if isinstance(record, dict) else \
            (None, None)
        if not isinstance(renderer, dict | None) or not isinstance(pending, list) or \
                not all(type(t) is int for t in pending):
            raise CorruptSession("malformed commit record (chat: a renderer object or null, pending token ids)")
        return cls(renderer, tuple(pending))


@dataclass
class Commit:
    session_id: str
    seq: int
    fingerprint: str
    layout: str
    num_tokens: int
    token_pages: int  # full token pages stored
    last_token_page: str | None  # address of the last full token page (each names its predecessor)
    partial_tokens: str  # base64 int32 LE: tokens after the last full token page
    tail: str  # address of the tail value
    head: SessionHead
    created_at: float
    parent: str | None = None  # "session@seq" this commit was forked or rewound from
    checkpoint: bool = False
    sampling: str | None = None  # base64 of the sampler's opaque state
    chat: ChatState | None = None

    def to_record(self) -> dict[str, Any]:
        record = {f.name: getattr(self, f.name) for f in fields(self)}
        record["head"] = head_record(self.head)
        record["chat"] = None if self.chat is None else self.chat.to_record()
        return {"format": FORMAT, **record}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Commit":
        if record.get("format") != FORMAT:
            raise IncompatibleSession(f"session format {record.get('format')!r} is not {FORMAT!r}")
        values = {k: v for k, v in record.items() if k != "format"}
        try:
            values["head"] = SessionHead(**values["head"])
            if values.get("chat") is not None:
                values["chat"] = ChatState.from_record(values["chat"])
            return cls(**values)
        except (KeyError, TypeError) as exc:  # a record of this format must have exactly these fields
            raise CorruptSession(f"malformed commit record ({exc})") from exc

    def partial_token_ids(self) -> list[int]:
        raw = base64.b64decode(self.partial_tokens)
        return list(struct.unpack(f"<{len(raw) // 4}i", raw))


def pack_tokens(token_ids: list[int]) -> str:
    return base64.b64encode(struct.pack(f"<{len(token_ids)}i", *token_ids)).decode()
