"""Persistent compressed KV sessions: the engine's paged state stored by ID, resumable without re-prefill."""

from model_worker.sessions.blobs import BlobStore, open_blobs
from model_worker.sessions.codec import BlobCodec
from model_worker.sessions.errors import (
    CorruptSession,
    IncompatibleSession,
    InvalidSessionRequest,
    QuotaExceeded,
    SessionError,
    SessionExists,
    SessionNotFound,
)
from model_worker.sessions.manifest import Head
from model_worker.sessions.store import CommitResult, OpenSession, SessionStore

__all__ = [
    "BlobCodec",
    "BlobStore",
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
