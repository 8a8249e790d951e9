"""What the platform's SQL stores can keep, checked where a request enters a service that stores it (the jobs service
and the agent service at their gRPC boundary, the gateway as it parses a body): text with no NUL character, which
PostgreSQL's text and JSONB columns refuse, and no unpaired surrogate, which is not UTF-8; numbers that are finite,
since JSON (and so JSONB) has no NaN or Infinity. Either is the client's mistake, refused before anything is stored
or run: `Unstorable`, a ValueError (INVALID_ARGUMENT, HTTP 400) naming the field. A NUL is refused rather than
replaced: no prompt needs one, and a stored request that differs from the one sent would be a silent change."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

_UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FLOATS = (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE)


class Unstorable(ValueError):
    """Text or a number no store keeps (INVALID_ARGUMENT / HTTP 400)."""


# A field's place in a request, as a linked list (parent, part) from a root that names the whole (`body`, or `the
# line`, or nothing for a protobuf request): built in O(1) per field, spelled out only for an error message.
Path = tuple[Any, str] | None


def _spell(path: Path) -> str:
    """`body.messages[0].content`; after a root in words, `the line: body.messages[0].content`."""
    parts: list[str] = []
    while path is not None:
        path, part = path
        parts.append(part)
    root, *inner = reversed(parts)
    below = "".join(inner)
    if " " in root and below:
        return f"{root}: {below.lstrip('.')}"
    return (root + below).lstrip(".") or "the request"


def _child(path: Path, name: str) -> Path:
    return (path, f".{name}")


def _item(path: Path, key: object) -> Path:
    return (path, f".{key}" if isinstance(key, str) and _NAME.fullmatch(key) else f"[{key!r}]")


def check_text(text: str, where: str | Path) -> str:
    found = _UNSTORABLE_TEXT.search(text)
    if found is not None:
        what = "a NUL character" if found.group() == "\x00" else "an unpaired surrogate (not UTF-8)"
        place = where if isinstance(where, str) else _spell(where)
        raise Unstorable(f"{place}: holds {what}, which no stored text may hold")
    return text


def check_number(value: float, where: str | Path) -> float:
    if not math.isfinite(value):
        place = where if isinstance(where, str) else _spell(where)
        raise Unstorable(f"{place}: {value} is not a finite number")
    return value


def check_json(value: Any, where: str) -> Any:
    """`value` (parsed JSON: dicts, lists, strings, numbers) if every key and string is storable text and every
    number finite. Iterative, so any depth is safe to check."""
    pending: list[tuple[Any, Path]] = [(value, (None, where))]
    while pending:
        node, path = pending.pop()
        if isinstance(node, str):
            check_text(node, path)
        elif isinstance(node, float):
            check_number(node, path)
        elif isinstance(node, dict):
            for key, child in node.items():
                check_text(str(key), _item(path, key))
                pending.append((child, _item(path, key)))
        elif isinstance(node, (list, tuple)):
            pending.extend((child, _item(path, i)) for i, child in enumerate(node))
    return value


def loads(text: str | bytes, where: str) -> Any:
    """JSON text as Python values: json.JSONDecodeError for text that is not JSON, Unstorable for the NaN and
    Infinity that Python's parser would otherwise take (they are not JSON)."""
    def refuse(token: str) -> float:
        raise Unstorable(f"{where}: {token} is not JSON (JSON numbers are finite)")

    return json.loads(text, parse_constant=refuse)


def _field_value(field: FieldDescriptor, value: Any, path: Path, pending: list[tuple[Message, Path]]) -> None:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        pending.append((value, path))
    elif field.type == FieldDescriptor.TYPE_STRING:
        check_text(value, path)
    elif field.type in _FLOATS:
        check_number(value, path)


def check_message(message: Message) -> Message:
    """`message` if every string in it (map keys too) is storable text and every float finite. Iterative, so a
    message type that nests itself is safe to check."""
    pending: list[tuple[Message, Path]] = [(message, (None, ""))]
    while pending:
        node, path = pending.pop()
        for field, value in node.ListFields():
            where = _child(path, field.name)
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                key_field, value_field = (field.message_type.fields_by_name[n] for n in ("key", "value"))
                for key, item in value.items():
                    _field_value(key_field, key, _item(where, key), pending)
                    _field_value(value_field, item, _item(where, key), pending)
            elif field.is_repeated:
                for i, item in enumerate(value):
                    _field_value(field, item, _item(where, i), pending)
            else:
                _field_value(field, value, where, pending)
    return message
