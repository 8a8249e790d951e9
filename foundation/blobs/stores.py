"""Where session bytes live: a flat key -> bytes store with the few operations sessions need, on a directory, any
fsspec URL, or Redis (redis_blobs.py), and the warm tier in front of the cold one.

Every `put` is all-or-nothing: a reader sees the whole value or no value (local files are written beside their key
and renamed; object stores and Redis replace a value in one request). `put_if_absent` is the one conditional write,
used to claim a session ID, a tenant's salt and a collection period: atomic on local files (a hard link) and Redis
(SET NX); on other fsspec stores it is check-then-write, so two workers racing for one new ID there could both
succeed.

Every operation of every store checks its key first (keys.py): the services check the IDs a key is built from,
and the stores refuse any key that could still leave their root or alias another, whatever the caller.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from typing import Protocol
from urllib.parse import urlparse

from foundation.blobs.keys import check_key, check_prefix
from foundation.blobs.redis_store import RedisBlobs, without_password

__all__ = ["BlobStore", "FsspecBlobs", "RedisBlobs", "TieredBlobs", "check_key", "open_blobs", "open_tiered"]

log = logging.getLogger(__name__)


class BlobStore(Protocol):
    url: str

    def get(self, key: str) -> bytes | None: ...
    def put(self, key: str, data: bytes) -> None: ...
    def put_if_absent(self, key: str, data: bytes) -> bool: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str) -> Iterator[str]: ...
    def folders(self, prefix: str) -> Iterator[str]:
        """Names of the folders directly under `prefix`; one emptied by deletes may still be named."""
    def written_at(self, key: str) -> float | None: ...
    def size(self, key: str) -> int | None: ...


class FsspecBlobs:
    """Keys are relative paths under the URL's root (`file://DIR`, a plain directory, `memory://NAME`, any fsspec
    protocol)."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = without_password(url)
        if "://" not in url:
            url = "file://" + os.path.abspath(url)
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/")
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))
        if self.local:
            os.makedirs(self.root, exist_ok=True)

    def _path(self, key: str) -> str:
        return f"{self.root}/{check_key(key)}"

    def get(self, key: str) -> bytes | None:
        try:
            return self.fs.cat_file(self._path(key))
        except (FileNotFoundError, IsADirectoryError):
            return None

    def put(self, key: str, data: bytes) -> None:
        if not self.local:
            self.fs.pipe_file(self._path(key), data)
            return
        self._write_local(key, data, os.replace)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        if not self.local:
            if self.fs.exists(self._path(key)):
                return False
            self.fs.pipe_file(self._path(key), data)
            return True
        try:
            self._write_local(key, data, os.link)  # a hard link fails if the key exists: check and write in one step
        except FileExistsError:
            return False
        return True

    def _write_local(self, key: str, data: bytes, publish) -> None:
        """Write beside the key, flush to disk, then make it visible whole with `publish(partial, path)`, and flush
        the directory: a rename or a link is durable only once its directory entry is (a crash could otherwise
        lose a commit record the writer had reported written)."""
        path = self._path(key)
        directory = os.path.dirname(path)
        _makedirs_durably(directory)
        fd, partial = tempfile.mkstemp(dir=directory, prefix=".partial-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            publish(partial, path)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        _fsync_directory(directory)

    def exists(self, key: str) -> bool:
        return self.fs.isfile(self._path(key))

    def delete(self, key: str) -> None:
        try:
            self.fs.rm_file(self._path(key))
        except FileNotFoundError:
            pass

    def list(self, prefix: str) -> Iterator[str]:
        check_prefix(prefix)
        base = f"{self.root}/{prefix.rstrip('/')}"
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return
        for path in found:
            key = path[len(self.root) + 1 :] if path.startswith(self.root) else path.lstrip("/")
            name = key.rsplit("/", 1)[-1]
            if not name.startswith(".partial-") and key.startswith(prefix):
                yield key

    def folders(self, prefix: str) -> Iterator[str]:
        check_prefix(prefix)
        try:
            entries = self.fs.ls(f"{self.root}/{prefix}".rstrip("/"), detail=True)
        except FileNotFoundError:
            return
        for entry in entries:
            if entry["type"] == "directory":
                yield entry["name"].rstrip("/").rsplit("/", 1)[-1]

    def size(self, key: str) -> int | None:
        try:
            return int(self.fs.size(self._path(key)))
        except FileNotFoundError:
            return None

    def written_at(self, key: str) -> float | None:
        try:
            info = self.fs.info(self._path(key))
        except FileNotFoundError:
            return None
        stamp = info.get("mtime") or info.get("created") or info.get("LastModified")
        return stamp.timestamp() if hasattr(stamp, "timestamp") else (float(stamp) if stamp else None)


def _makedirs_durably(directory: str) -> None:
    """os.makedirs, each new directory's entry flushed to disk in its parent."""
    missing = []
    while not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for path in reversed(missing):
        try:
            os.mkdir(path)
        except FileExistsError:  # another writer made it meanwhile
            pass
        _fsync_directory(os.path.dirname(path))


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_blobs(url: str, ttl_seconds: float | None = None) -> BlobStore:
    """A store for `url`: redis://, rediss://, file://, memory:// or any fsspec protocol, or a plain directory.
    `ttl_seconds`: values Redis may forget after that long unused (a cache: the warm tier)."""
    scheme = urlparse(url).scheme if "://" in url else ""
    if scheme in ("redis", "rediss", "unix"):
        return RedisBlobs(url, ttl_seconds)
    return FsspecBlobs(url)


class TieredBlobs:
    """Warm (Redis, shared by workers) in front of cold (a directory or object store, the durable copy).

    Writes go to cold, then warm, so a value is durable before any worker can see it warm; cold holds every value,
    so it alone answers listings, sizes and write times. Reads try warm, then cold, refilling warm from cold;
    `copies` yields each tier's copy so a reader can fall back past a damaged one. Warm may forget values (TTL,
    eviction, restart) and may fail (full, unreachable): a read then goes to cold, and a write that warm refuses
    removes warm's older copy instead, so warm never answers with a value cold has replaced.
    """

    def __init__(self, warm: BlobStore, cold: BlobStore) -> None:
        self.warm, self.cold = warm, cold
        self.url = f"{warm.url} + {cold.url}"
        self._warned = False

    def copies(self, key: str) -> Iterator[bytes]:
        value = self._from_warm(lambda: self.warm.get(check_key(key)))
        if value is not None:
            yield value
        value = self.cold.get(key)
        if value is not None:
            self._from_warm(lambda: self.warm.put(key, value))
            yield value

    def get(self, key: str) -> bytes | None:
        return next(self.copies(key), None)

    def put(self, key: str, data: bytes) -> None:
        self.cold.put(check_key(key), data)
        self._write_warm(key, data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        if not self.cold.put_if_absent(check_key(key), data):
            return False
        self._write_warm(key, data)
        return True

    def _write_warm(self, key: str, data: bytes) -> None:
        try:
            self.warm.put(key, data)
        except OSError as refused:
            self._warn(refused)
            try:
                self.warm.delete(key)
            except OSError:
                raise refused from None  # warm may still hold an older value: the write is not done

    def _from_warm(self, read):
        """A warm read (or refill) that warm failing turns into a miss."""
        try:
            return read()
        except OSError as exc:
            self._warn(exc)
            return None

    def _warn(self, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            log.warning("warm session tier failing, served from the cold tier meanwhile: %s", exc)

    def exists(self, key: str) -> bool:
        return bool(self._from_warm(lambda: self.warm.exists(check_key(key)))) or self.cold.exists(key)

    def delete(self, key: str) -> None:
        self.cold.delete(check_key(key))
        self.warm.delete(key)

    def list(self, prefix: str) -> Iterator[str]:
        return self.cold.list(prefix)

    def folders(self, prefix: str) -> Iterator[str]:
        return self.cold.folders(prefix)

    def written_at(self, key: str) -> float | None:
        return self.cold.written_at(key)

    def size(self, key: str) -> int | None:
        return self.cold.size(key)


def open_tiered(cold_url: str, warm_url: str | None = None, warm_ttl_seconds: float | None = None) -> BlobStore:
    """The cold store alone, or warm Redis (its values kept `warm_ttl_seconds` after their last use) in front."""
    cold = open_blobs(cold_url)
    return TieredBlobs(open_blobs(warm_url, warm_ttl_seconds), cold) if warm_url else cold
