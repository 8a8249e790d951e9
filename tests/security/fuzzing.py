"""Requests for a gRPC fuzzer, built from message descriptors (those a server's reflection gives, see grpc_reflect.py):
hypothesis strategies (hostile and unicode strings, integers at their type's bounds, nested and repeated messages, one
field of each oneof, JSON-ish text for JSON fields), and a deterministic sweep that sets each field in turn to its
type's critical values. What the servers answer is the test's business (tests/security)."""

from __future__ import annotations

import io
import math
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field

from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from hypothesis import strategies as st

HOSTILE_STRINGS = ["", ".", "..", "../x", "../../../../etc/passwd", "a/../../b", "/abs/path", "a\\..\\b",
                   "%2e%2e%2f", "x\x00y", "\u202eevil", "é\u0301", "🙂🙂", "名前", " ", "\n", "CON", "*", "%s%n",
                   "a" * 300, "s" * 2000]
_DEEP = 50_000  # past Python's recursion limit: a recursive parser must refuse it, not crash
JSON_VALID = ["", "{}", '{"type": "object"}', '{"type": "string"}', '{"enum": ["a", "b"]}',
              '{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}']
JSON_BROKEN = ["[]", "null", '"x"', "1e999", "NaN", "{", "[", '{"$ref": "#"}', '{"type": "string", "pattern": "("}',
               '{"enum": []}', '{"type": 7}', "[" * _DEEP + "]" * _DEEP, '{"a":' * _DEEP + "1" + "}" * _DEEP,
               '{"properties": {"a": ' * 300 + "{}" + "}}" * 300, "\ufeff{}", "{}{}"]


def _tar(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.size = kind, link, 0 if link else 3
        tar.addfile(info, None if link else io.BytesIO(b"abc"))
    return out.getvalue()


TARS = [_tar("../escaped"), _tar("/etc/passwd"), _tar("manifest.json", tarfile.SYMTYPE, "/etc/passwd"),
        _tar("a", tarfile.LNKTYPE, "../../b")]
_FLOAT32_MAX = 3.4028234663852886e38
_INT_RANGES = {**dict.fromkeys((FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32),
                                (-(2**31), 2**31 - 1)),
               **dict.fromkeys((FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64),
                                (-(2**63), 2**63 - 1)),
               **dict.fromkeys((FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32), (0, 2**32 - 1)),
               **dict.fromkeys((FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64), (0, 2**64 - 1))}


def is_id_field(name: str) -> bool:
    return name.endswith(("_id", "session", "holder")) or name in ("after", "page_token", "turn", "batch")


def is_json_field(name: str) -> bool:
    return name.endswith("_json") or name in ("json_schema", "response_format_json_schema", "jsonl")


@dataclass
class Hints:
    """What makes generated requests reach past validation into real work: IDs of objects that exist (some another
    tenant's), ordinary values of named string fields, sample bytes, more edge integers, and fields always set (a
    generation's `max_tokens`: without it a request may generate up to the model's context, past any deadline)."""

    ids: list[str] = field(default_factory=list)
    words: dict[str, list[str]] = field(default_factory=dict)
    blobs: list[bytes] = field(default_factory=list)
    ints: list[int] = field(default_factory=list)
    always: frozenset[str] = frozenset()
    special: dict[str, st.SearchStrategy] = field(default_factory=dict)  # by field name: replaces the generic one
    seeds: dict[str, list] = field(default_factory=dict)  # by method name: valid requests to vary one field of


def _ints(lo: int, hi: int, hints: Hints, wild: bool) -> st.SearchStrategy[int]:
    if not wild:
        return st.integers(max(lo, 1), min(hi, 8))
    return st.sampled_from([v for v in (lo, lo + 1, -2, -1, 0, hi - 1, hi, *hints.ints) if lo <= v <= hi])


def _strings(name: str, hints: Hints, wild: bool) -> st.SearchStrategy[str]:
    if is_json_field(name):
        return st.sampled_from(JSON_BROKEN if wild else JSON_VALID)
    if wild:
        return st.one_of(st.sampled_from(HOSTILE_STRINGS), st.text(max_size=12))
    if name in hints.words:
        return st.sampled_from(hints.words[name])
    if is_id_field(name) and hints.ids:
        return st.sampled_from(hints.ids)
    return st.text(min_size=1, max_size=12)


def scalar(f: FieldDescriptor, hints: Hints, wild: bool = False) -> st.SearchStrategy:
    """A value of a scalar field: an ordinary one, or (`wild`) one from its edges."""
    if f.type == FieldDescriptor.TYPE_STRING:
        return _strings(f.name, hints, wild)
    if f.type == FieldDescriptor.TYPE_BYTES:
        ordinary = st.sampled_from(hints.blobs) if hints.blobs else st.binary(max_size=16)
        broken = [*TARS, b"\xfd7zXZ\x00" + bytes(64), *(blob[: len(blob) // 2] for blob in hints.blobs)]
        return st.one_of(st.binary(max_size=64), st.sampled_from(broken)) if wild else ordinary
    if f.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if f.type == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in f.enum_type.values]
        return st.sampled_from([-1, 99, 2**31 - 1]) if wild else st.sampled_from(known)  # enums are open
    if f.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        width = 32 if f.type == FieldDescriptor.TYPE_FLOAT else 64
        top = _FLOAT32_MAX if width == 32 else 1.7976931348623157e308
        edges = [0.0, -0.0, -1.0, math.inf, -math.inf, math.nan, top, -top, 1e-45, 1e9]
        return st.sampled_from(edges) if wild else st.floats(0.125, 1, width=width)
    return _ints(*_INT_RANGES[f.type], hints, wild)


def _map_entry(f: FieldDescriptor) -> bool:
    return f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type.GetOptions().map_entry


class _Edge:
    """Which field a request takes from its edges: the `at`-th field visited while building it, counted across every
    nested message (none when `at` is -1), so most requests get past validation and each field's edges are tried."""

    def __init__(self, at: int) -> None:
        self.at, self.visited = at, 0

    def here(self) -> bool:
        self.visited += 1
        return self.visited - 1 == self.at


def messages(descriptor, hints: Hints) -> st.SearchStrategy:
    """Messages of `descriptor`'s type (its class from the pool it came from)."""
    @st.composite
    def build(draw):
        return _build(draw, descriptor, hints, 0, _Edge(draw(st.one_of(st.just(-1), st.integers(0, 40)))))

    return build()


def _build(draw, descriptor, hints: Hints, depth: int, edge: _Edge):
    """Ordinary values in every field but the edge's; one field of each oneof; a repeated field long when it is the
    edge."""
    message = message_factory.GetMessageClass(descriptor)()
    if depth > 4:  # a recursive type would nest forever; this deep, an empty message will do
        return message
    oneofs = [o for o in descriptor.oneofs if not (len(o.fields) == 1 and o.name == f"_{o.fields[0].name}")]
    chosen = {o.name: draw(st.sampled_from([*o.fields, *o.fields, None])) for o in oneofs}
    for f in descriptor.fields:
        real_oneof = f.containing_oneof is not None and f.containing_oneof.name in chosen
        if real_oneof and chosen[f.containing_oneof.name] is not f:
            continue
        wild = edge.here()

        def value(field: FieldDescriptor = f, wild: bool = wild):
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                return _build(draw, field.message_type, hints, depth + 1, edge)
            return draw(scalar(field, hints, wild))

        if f.name in hints.special:
            _assign(message, f, draw(hints.special[f.name]))
        elif _map_entry(f):
            key, item = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            _assign(message, f, {value(key): value(item) for _ in range(draw(st.integers(0, 3)))})
        elif f.is_repeated:
            _assign(message, f, [value() for _ in range(draw(st.integers(0, 24 if wild else 2)))])
        elif real_oneof or wild or f.name in hints.always or draw(_presence(f, hints)):
            _assign(message, f, value())
    return message


def _presence(f: FieldDescriptor, hints: Hints) -> st.SearchStrategy[bool]:
    """Whether an ordinary message sets the field: names always, IDs mostly (an empty one is among the edges)."""
    if f.name in hints.words:
        return st.just(True)
    return st.sampled_from([True, True, True, False] if is_id_field(f.name) else [True, False])


def _assign(message, f: FieldDescriptor, value) -> None:
    if _map_entry(f):
        target = getattr(message, f.name)
        for key, item in value.items():
            if f.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE:
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif f.is_repeated:
        getattr(message, f.name).extend(value)
    elif f.type == FieldDescriptor.TYPE_MESSAGE:
        getattr(message, f.name).CopyFrom(value)
    else:
        setattr(message, f.name, value)


def requests(method: MethodDescriptor, hints: Hints) -> st.SearchStrategy:
    """One request, or for a client-streaming method the list of messages it sends: built whole, or (where the
    method has seeds) a valid one with one field built, which reaches past the checks that relate fields."""
    built = messages(method.input_type, hints)
    seeds = hints.seeds.get(method.name)
    one = st.one_of(built, _varied(seeds, method.input_type, hints)) if seeds else built
    return st.lists(one, min_size=1, max_size=3) if method.client_streaming else one


def _varied(seeds: list, descriptor, hints: Hints) -> st.SearchStrategy:
    cls = message_factory.GetMessageClass(descriptor)
    valid = [cls.FromString(seed.SerializeToString()) for seed in seeds]  # into the reflected pool's classes
    fields = list(descriptor.fields)

    @st.composite
    def vary(draw):
        request = cls()
        request.CopyFrom(draw(st.sampled_from(valid)))
        piece = draw(messages(descriptor, hints))
        chosen = draw(st.sampled_from(fields))
        for other in fields:
            if other is not chosen:
                piece.ClearField(other.name)
        request.ClearField(chosen.name)
        request.MergeFrom(piece)
        return request

    return vary()


# -- the sweep: each field in turn set to its type's critical values ----------------------------------------------
CRITICAL_STRINGS = ["nul\x00inside", "../../escape", "s" * 2000]
CRITICAL_JSON = ["[" * _DEEP + "]" * _DEEP, '{"a":' * _DEEP + "1" + "}" * _DEEP, '{"x": "nul\x00"}']


def _critical(f: FieldDescriptor) -> list:
    if _map_entry(f):  # entries with a critical key, then with a critical value
        keys, values = (_critical(f.message_type.fields_by_name[n]) for n in ("key", "value"))
        return [(k, values[0]) for k in keys] + [(keys[0], v) for v in values[1:]]
    if f.type == FieldDescriptor.TYPE_STRING:
        return CRITICAL_JSON if is_json_field(f.name) else CRITICAL_STRINGS
    if f.type == FieldDescriptor.TYPE_BYTES:
        return [TARS[0], b"\x00" * 16]
    if f.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return [math.nan, math.inf]
    if f.type == FieldDescriptor.TYPE_ENUM:
        return [99]
    if f.type == FieldDescriptor.TYPE_BOOL:
        return [True]
    return list(_INT_RANGES[f.type])


def _paths(descriptor, prefix: tuple = ()) -> Iterator[tuple]:
    """Every field reachable from the message, through nested (and first repeated) messages, three deep."""
    for f in descriptor.fields:
        if f.type == FieldDescriptor.TYPE_MESSAGE and not _map_entry(f):
            if len(prefix) < 3:
                yield from _paths(f.message_type, (*prefix, f))
        else:
            yield (*prefix, f)


def _set(message, path: tuple, value) -> None:
    for f in path[:-1]:
        if f.is_repeated:
            items = getattr(message, f.name)
            message = items[0] if len(items) else items.add()
        else:
            message = getattr(message, f.name)
    last = path[-1]
    if _map_entry(last):
        key, item = value
        getattr(message, last.name)[key] = item
    elif last.is_repeated:
        getattr(message, last.name).append(value)
    else:
        setattr(message, last.name, value)


def sweep(method: MethodDescriptor, hints: Hints) -> Iterator:
    """Requests, in a fixed order, that each differ from a valid one (the method's first seed, or one naming the
    first known ID) in one field set to one of its type's critical values: NUL and path traversal in strings, deep
    JSON in JSON fields, both bounds of integers, NaN and infinity, an unknown enum value, a tar escaping its root."""
    cls = message_factory.GetMessageClass(method.input_type)
    seeds = hints.seeds.get(method.name)
    base = cls.FromString(seeds[0].SerializeToString()) if seeds else cls()
    if not seeds and hints.ids:
        for f in method.input_type.fields:
            if f.type == FieldDescriptor.TYPE_STRING and is_id_field(f.name) and not f.is_repeated:
                setattr(base, f.name, hints.ids[0])
    for path in _paths(method.input_type):
        for value in _critical(path[-1]):
            request = cls()
            request.CopyFrom(base)
            _set(request, path, value)
            yield [request] if method.client_streaming else request
