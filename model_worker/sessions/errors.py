"""Typed session errors; the gRPC worker maps each to a status code (in parentheses)."""

from __future__ import annotations


class SessionError(Exception):
    """Base of every session error."""


class SessionNotFound(SessionError):
    """No such session for this tenant, or one owned by another tenant (NOT_FOUND: existence is not revealed)."""


class SessionExists(SessionError):
    """A caller-chosen session ID that is already taken (ALREADY_EXISTS)."""


class IncompatibleSession(SessionError):
    """Stored for other weights, another numerics or an unknown format version (FAILED_PRECONDITION)."""


class CorruptSession(SessionError):
    """A stored value failed its checksum or does not parse (DATA_LOSS when no copy is left)."""


class QuotaExceeded(SessionError):
    """The tenant's byte cap would be exceeded; the session stays at its previous commit (RESOURCE_EXHAUSTED)."""


class StoreBehind(SessionError):
    """The store has not kept up: commits waiting to be written fill their bound and none was taken in time
    (UNAVAILABLE: the session continues from its last written commit, on this worker or another)."""

    message_is_public = True  # the store's own words, safe for the caller (foundation.errors)


class TooLarge(SessionError):
    """Input over one of its bounds, e.g. an import past its byte or member limits (RESOURCE_EXHAUSTED)."""


class InvalidSessionRequest(SessionError, ValueError):
    """A malformed ID, position or argument (INVALID_ARGUMENT)."""


