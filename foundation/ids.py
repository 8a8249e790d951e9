"""The one validator for every identifier a client chooses that reaches a path or a storage key: session, holder,
request, turn, file, batch and response IDs. Services check each at the boundary (INVALID_ARGUMENT / 400); the
stores check the keys built from them again (a key that would leave the store's root is refused there too).

An ID is 1-128 characters of A-Z a-z 0-9 '.' '_' '-', and not '.' or '..': no separator, no traversal, no glob,
nothing a shell, a URL or a Redis pattern treats specially."""

from __future__ import annotations

import re

MAX_ID_CHARS = 128
_ID = re.compile(r"[A-Za-z0-9._-]{1,%d}" % MAX_ID_CHARS)


class InvalidId(ValueError):
    """A malformed identifier (INVALID_ARGUMENT / HTTP 400)."""


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None and value not in (".", "..")


def check_id(value: object, kind: str = "id") -> str:
    """`value` if it is a valid identifier, else InvalidId naming `kind` (e.g. "session_id")."""
    if not is_valid_id(value):
        shown = repr(value) if not isinstance(value, str) or len(value) <= 80 else repr(value[:80]) + "..."
        raise InvalidId(f"{kind}: 1-{MAX_ID_CHARS} characters of A-Z a-z 0-9 . _ -, not {shown}")
    return value


def check_optional_id(value: str, kind: str = "id") -> str:
    """An identifier the caller may leave empty (the service then picks one)."""
    return check_id(value, kind) if value else value
