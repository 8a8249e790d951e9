"""Persistent compressed KV sessions: the engine's paged state stored by ID, resumable without re-prefill."""

from foundation.blobs.stores import BlobStore, open_blobs
from model_worker.sessions.codec import BlobCodec
from model_worker.sessions.commits import CommitResult
from model_worker.sessions.errors import (
    CorruptSession,
    IncompatibleSession,
    InvalidSessionRequest,
    QuotaExceeded,
    SessionError,
    SessionExists,
    SessionNotFound,
)
from model_worker.sessions.manifest import ChatState, Head
from model_worker.sessions.session import OpenSession
from model_worker.sessions.store import SessionStore

__all__ = [
    "BlobCodec",
    "BlobStore",
    "ChatState",
    "CommitResult",
    "CorruptSession",
    "Head",
    "IncompatibleSession",
    "InvalidSessionRequest",
    "OpenSession",
    "QuotaExceeded",
    "SessionError",
    "SessionExists",
    "SessionNotFound",
    "SessionStore",
    "open_blobs",
]
