"""Parameter values of a DSML call. A string is written raw (`string="true"`), anything else as JSON
(`string="false"`), as the official encoder does. A raw string's constraints (const, enum, length, pattern) become a
Lark terminal here; everything else goes through llguidance's JSON-schema compiler (`%json`), which also takes a string
whose constraints a raw terminal cannot express (format, anyOf...), written as a JSON string instead."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import llguidance

from foundation.chat.protocol import DSML

# Text that never spells the DSML marker: free text and raw values must not, or the tool-call parser (which reads
# the decoded text) would take it for markup. The marker token itself is special to the grammar (never inside
# text); this also rules out spelling it with ordinary tokens.
NO_DSML = f"NO_DSML: /(?s:.*)/ & ~/(?s:.*){DSML}(?s:.*)/"

_JSON_TYPES = ("string", "number", "integer", "boolean", "object", "array", "null")
# Keywords a raw string terminal understands; any other keyword sends string values down the JSON path.
_RAW_KEYWORDS = {"type", "enum", "const", "minLength", "maxLength", "pattern", "description", "title", "default",
                 "examples"}
# JSON written the way the official encoder writes it (json.dumps defaults): ", " and ": ", no other whitespace.
# Besides matching the model's training data this bounds every value, so even an untrained model's calls terminate.
_COMPACT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


class UnsupportedSchema(ValueError):
    """A tool choice, tool or response format the grammar cannot enforce (INVALID_ARGUMENT)."""


def lit(text: str) -> str:
    """A Lark string literal (llguidance reads literals as JSON strings)."""
    return json.dumps(text, ensure_ascii=False)


def _types(schema: Mapping[str, Any]) -> list[str]:
    """The JSON types a schema admits, from `type`, `const` or `enum` (all types when none is given)."""
    if "const" in schema:
        return [_type_of(schema["const"])]
    if "enum" in schema:
        return sorted({_type_of(v) for v in schema["enum"]})
    kind = schema.get("type")
    if kind is None:
        return list(_JSON_TYPES)
    return [kind] if isinstance(kind, str) else list(kind)


def _type_of(value: Any) -> str:
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if value is None:
        return "null"
    return "array" if isinstance(value, list) else "object"


def raw_string_terminal(schema: Any, where: str) -> str | None:
    """A Lark terminal for a raw string value and the "</" that closes it, or None when string values cannot be
    written raw (the schema admits no string, or has keywords only the JSON compiler enforces)."""
    if schema is True or schema == {}:
        return 'NO_DSML "</"'
    if not isinstance(schema, Mapping) or set(schema) - _RAW_KEYWORDS or "string" not in _types(schema):
        return None
    if "const" in schema:
        return f'{lit(schema["const"])} "</"'
    if "enum" in schema:
        return "(" + " | ".join(lit(v) for v in schema["enum"] if isinstance(v, str)) + ') "</"'
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    if not isinstance(low, int) or not (high is None or isinstance(high, int)) or low < 0 or \
            (high is not None and high < low):
        raise UnsupportedSchema(f"{where}: minLength/maxLength must be integers with 0 <= minLength <= maxLength")
    body = f"/(?s:.){{{low},{'' if high is None else high}}}/"
    if "pattern" in schema:
        pattern = schema["pattern"]
        if not isinstance(pattern, str):
            raise UnsupportedSchema(f"{where}: pattern must be a string")
        # The whole value must match, so a leading ^ and a trailing $ change nothing.
        pattern = pattern.removeprefix("^")
        if pattern.endswith("$") and not pattern.endswith("\\$"):
            pattern = pattern[:-1]
        body = f"/{llguidance.regex_to_lark(pattern, 'dw')}/ & {body}"
    return f'({body} & NO_DSML) "</"'


def json_value(schema: Any, root: Mapping[str, Any], where: str = "response_format", strings: bool = True
               ) -> str | None:
    """`%json {...}` for `schema` (its references resolved against `root`), or None when it admits no value; with
    `strings` False, string values are left out (they are written raw)."""
    if schema is False:
        return None
    if schema is True:
        schema = {}
    if not isinstance(schema, Mapping):
        raise UnsupportedSchema(f"{where}: the schema must be a JSON object")
    schema = dict(schema)
    if not strings:
        if "const" in schema or "enum" in schema:
            values = [schema["const"]] if "const" in schema else schema["enum"]
            values = [v for v in values if not isinstance(v, str)]
            if not values:
                return None
            schema.pop("const", None)
            schema["enum"] = values
        else:
            kinds = [t for t in _types(schema) if t != "string"]
            if not kinds:
                return None
            schema["type"] = kinds
    for key in ("$defs", "definitions"):
        if key in root and key not in schema:
            schema[key] = root[key]
    schema.setdefault("x-guidance", _COMPACT)
    return "%json " + json.dumps(schema, ensure_ascii=False)
