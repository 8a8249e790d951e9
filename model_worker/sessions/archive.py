"""Reading a session export (the tar file `admin.export_session` writes, plain or gzip / bzip2 / xz compressed) as
untrusted input: one pass over a stream, every size bounded before it is read, and nothing in it trusted until
checked.

An export is export.json (format, the commit record, the token log), tail.safetensors and
pages/{ratio}/{index}.safetensors. Any other member, a link, a directory, a device, a repeated name, more members or
bytes than `ImportLimits` allows, or a stream that is not such a tar is refused before the next byte is read:
InvalidSessionRequest (INVALID_ARGUMENT) for what is malformed, TooLarge (RESOURCE_EXHAUSTED) for what is too big.
Decompression is counted as it happens, so a small compressed archive cannot expand into more than the bound.
"""

from __future__ import annotations

import base64
import binascii
import bz2
import gzip
import json
import lzma
import re
import tarfile
import zlib
from dataclasses import dataclass
from typing import IO, Any

from model_worker.sessions.codec import parse_tensors
from model_worker.sessions.errors import (
    CorruptSession,
    IncompatibleSession,
    InvalidSessionRequest,
    SessionError,
    TooLarge,
)
from model_worker.sessions.manifest import Commit
from model_worker.sessions.state_io import restore_state
from model_worker.state import SequenceState

EXPORT_FORMAT = "dsv4-session-export/1"
_MEMBER = re.compile(r"export\.json|tail\.safetensors|pages/[0-9]{1,6}/[0-9]{1,9}\.safetensors")
_MAX_TOKEN = 2**31  # token ids are stored as int32
_HEAD_TYPES = {"think_max": (bool,), "system_prompt": (str, type(None)), "tools": (list, type(None)),
               "response_format": (dict, type(None)), "head_tokens": (int,)}  # exact types: no bool for an int


@dataclass(frozen=True)
class ImportLimits:
    """Bounds of one import; `WorkerSettings` names each `import_*` and documents the defaults (a full 1M-token
    session of the pro model is ~4.9 GiB of page groups in ~4,200 members of at most a few MiB)."""

    max_bytes: int = 6 << 30  # as received (compressed); also at most what is left of the tenant's quota
    max_uncompressed_bytes: int = 6 << 30  # the tar stream after decompression, headers included
    max_members: int = 10_000
    max_member_bytes: int = 64 << 20

    @classmethod
    def from_settings(cls, settings: Any) -> ImportLimits:
        return cls(settings.import_max_bytes, settings.import_max_uncompressed_bytes, settings.import_max_members,
                   settings.import_max_member_bytes)


@dataclass
class Export:
    """A checked export: its commit record, token log and member bodies (tail and page groups, by name)."""

    commit: Commit
    token_ids: list[int]
    files: dict[str, bytes]


class _Bounded:
    """A read-only stream that refuses to yield more than `limit` bytes in all."""

    def __init__(self, raw: IO[bytes], limit: int) -> None:
        self.raw, self.limit, self.count = raw, limit, 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.limit - self.count + 1
        data = self.raw.read(min(size, self.limit - self.count + 1))
        self.count += len(data)
        if self.count > self.limit:
            raise TooLarge(f"the export unpacks to more than {self.limit:,} bytes (import_max_uncompressed_bytes)")
        return data


def _decompressed(raw: IO[bytes]) -> IO[bytes]:
    """The tar stream inside `raw`, decompressed on the fly when its magic names a compression."""
    magic = raw.read(6)
    raw.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(raw, mode="rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw, mode="rb")
    return raw


def read_export(raw: IO[bytes], limits: ImportLimits) -> Export:
    """The export in the seekable binary file `raw`, checked and bounded."""
    try:
        with tarfile.open(fileobj=_Bounded(_decompressed(raw), limits.max_uncompressed_bytes), mode="r|") as tar:
            files = _members(tar, limits)
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise InvalidSessionRequest(f"not a session export (a tar file, optionally compressed): {exc}") from None
    except OSError as exc:
        if exc.errno is not None:  # the machine's, not the archive's (a format error carries no errno)
            raise
        raise InvalidSessionRequest(f"not a session export (a tar file, optionally compressed): {exc}") from None
    if "export.json" not in files or "tail.safetensors" not in files:
        raise InvalidSessionRequest("a session export holds export.json and tail.safetensors")
    commit, token_ids = _header(files.pop("export.json"))
    return Export(commit, token_ids, files)


def _members(tar: tarfile.TarFile, limits: ImportLimits) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    total = 0
    for member in tar:
        if len(files) >= limits.max_members:
            raise TooLarge(f"the export has more than {limits.max_members:,} members (import_max_members)")
        if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            raise InvalidSessionRequest(f"export member {member.name!r:.100}: only regular files belong in an export "
                                        "(no links, directories, devices or sparse files)")
        if not _MEMBER.fullmatch(member.name):
            raise InvalidSessionRequest(f"export member {member.name!r:.100} is not part of a session export")
        if member.name in files:
            raise InvalidSessionRequest(f"export member {member.name} appears twice")
        total += member.size
        if member.size > limits.max_member_bytes or total > limits.max_uncompressed_bytes:
            raise TooLarge(f"export member {member.name} ({member.size:,} bytes) is over import_max_member_bytes "
                           f"({limits.max_member_bytes:,}) or import_max_uncompressed_bytes in all")
        body = tar.extractfile(member).read()
        if len(body) != member.size:
            raise InvalidSessionRequest(f"export member {member.name} is cut short")
        files[member.name] = body
    return files


def _header(body: bytes) -> tuple[Commit, list[int]]:
    try:
        header = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidSessionRequest(f"export.json does not parse ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        raise InvalidSessionRequest(f"export.json: not a {EXPORT_FORMAT} header")
    record, tokens = header.get("commit"), header.get("tokens")
    if not isinstance(record, dict) or not isinstance(record.get("head"), dict):
        raise InvalidSessionRequest("export.json: the commit record is not an object with a head")
    if not isinstance(tokens, list) or not all(type(t) is int and 0 <= t < _MAX_TOKEN for t in tokens):
        raise InvalidSessionRequest("export.json: tokens is a list of token ids")
    _check_head(record["head"])
    try:
        commit = Commit.from_record(record)
    except (IncompatibleSession, CorruptSession) as exc:
        raise InvalidSessionRequest(f"export.json: {exc}") from None
    if not isinstance(commit.sampling, str | None):  # the chat state is checked by Commit.from_record
        raise InvalidSessionRequest("export.json: the commit's sampling state is of the wrong kind")
    if commit.num_tokens != len(tokens):
        raise InvalidSessionRequest(f"export.json: {len(tokens)} tokens for a commit of {commit.num_tokens!r}")
    return commit, tokens


def _check_head(head: dict[str, Any]) -> None:
    wrong = [name for name, value in head.items() if name not in _HEAD_TYPES or type(value) not in _HEAD_TYPES[name]]
    if wrong or not all(isinstance(tool, dict) for tool in head.get("tools") or ()):
        raise InvalidSessionRequest(f"export.json: the commit's head has fields of the wrong kind ({wrong})")


def restore(state: SequenceState, exported: Export) -> None:
    """Fill a fresh `state` from the export's tail and page groups; anything that does not fit the state's layout is
    the export's fault (InvalidSessionRequest)."""
    files = exported.files
    try:
        tensors, metadata = parse_tensors("tail.safetensors", files["tail.safetensors"])
        if metadata.get("num_tokens") != exported.commit.num_tokens:
            raise ValueError("the tail and the token log disagree")
        restore_state(state, tensors, metadata, lambda r, j: parse_tensors(
            f"pages/{r}/{j}", files[f"pages/{r}/{j}.safetensors"])[0])
        state.sampling = None if exported.commit.sampling is None else \
            base64.b64decode(exported.commit.sampling, validate=True)
    except (SessionError, KeyError, ValueError, TypeError, IndexError, RuntimeError, binascii.Error) as exc:
        raise InvalidSessionRequest(f"incomplete or damaged export ({type(exc).__name__}: {exc})") from None
