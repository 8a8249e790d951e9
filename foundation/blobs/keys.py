"""What every blob store accepts as a key or a listing prefix (each store checks before any operation): the services
check the IDs a key is built from, and the stores refuse any key that could still leave their root or alias another
(no empty, '.' or '..' segment, no leading '/', no backslash or NUL), whatever the caller."""

from __future__ import annotations


class InvalidKey(ValueError):
    """A storage key that could leave its store's root or alias another (INVALID_ARGUMENT); the services check
    the IDs keys are built from first, so this is the stores' own line of defence."""


def check_key(key: str) -> str:
    """`key` if it names a value inside a store's root: '/'-separated segments, none empty, '.' or '..', with no
    backslash or NUL anywhere; else InvalidKey."""
    if not isinstance(key, str) or "\\" in key or "\0" in key or \
            any(segment in ("", ".", "..") for segment in key.split("/")):
        raise InvalidKey(f"not a key inside the store: {key!r:.200}")
    return key


def check_prefix(prefix: str) -> str:
    """Listing is by folder on every backend: a prefix is '' or a key followed by '/'."""
    if prefix and not prefix.endswith("/"):
        raise InvalidKey(f"list prefixes end with '/', not {prefix!r:.200}")
    if prefix:
        check_key(prefix[:-1])
    return prefix


def folder_of(key: str) -> tuple[str, str]:
    """(the folder holding `key`, its name there): "t/a/b" -> ("t/a/", "b"); a folder "t/a/" -> ("t/", "a/")."""
    head, _, name = key.rstrip("/").rpartition("/")
    return (head + "/" if head else ""), name + ("/" if key.endswith("/") else "")


def glob_escape(text: str) -> str:
    """`text` matched literally by a Redis glob (SCAN MATCH)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
