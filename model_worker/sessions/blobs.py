"""Where session bytes live: a flat key -> bytes store with the few operations sessions need, on a directory, any
fsspec URL, or Redis.

Every `put` is all-or-nothing: a reader sees the whole value or no value (local files are written beside their key
and renamed; object stores and Redis replace a value in one request). `put_if_absent` is the one conditional write,
used to claim a session ID and a tenant's salt: atomic on local files (a hard link) and Redis (SET NX); on other
fsspec stores it is check-then-write, so two workers racing for one new ID there could both succeed.

Every operation of every store checks its key first (`check_key`): the services check the IDs a key is built from,
and the stores refuse any key that could still leave their root or alias another (no empty, '.' or '..' segment, no
leading '/', no backslash or NUL), whatever the caller.
"""

from __future__ import annotations

import errno
import os
import tempfile
import time
from collections.abc import Iterator
from typing import Protocol
from urllib.parse import urlparse

from model_worker.sessions.errors import InvalidKey


class BlobStore(Protocol):
    url: str

    def get(self, key: str) -> bytes | None: ...
    def put(self, key: str, data: bytes) -> None: ...
    def put_if_absent(self, key: str, data: bytes) -> bool: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str) -> Iterator[str]: ...
    def written_at(self, key: str) -> float | None: ...
    def size(self, key: str) -> int | None: ...


class FsspecBlobs:
    """Keys are relative paths under the URL's root (`file://DIR`, a plain directory, `memory://NAME`, any fsspec
    protocol)."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url
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
        _check_prefix(prefix)
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


class RedisBlobs:
    """Keys under a prefix in one Redis database (`redis://HOST:PORT/DB[?prefix=P]`); write times in a sorted set so
    the collector can spare blobs written moments ago."""

    def __init__(self, url: str) -> None:
        import redis

        self.url = url
        query = dict(part.split("=", 1) for part in urlparse(url).query.split("&") if "=" in part)
        self.prefix = query.get("prefix", "dsv4:")
        self.client = redis.Redis.from_url(url.split("?", 1)[0])
        self.times_key = self.prefix + "\0written"  # no key of the session layout starts with a NUL

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def get(self, key: str) -> bytes | None:
        return self.client.get(self._key(key))

    def put(self, key: str, data: bytes) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self._key(key), data)
        pipe.zadd(self.times_key, {key: time.time()})
        self._write(pipe)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        # Value and write time in one transaction; the time is refreshed even when the key exists (harmless).
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self._key(key), data, nx=True)
        pipe.zadd(self.times_key, {key: time.time()}, nx=True)
        created, _ = self._write(pipe)
        return bool(created)

    def _write(self, pipe) -> list:
        """Run a write; Redis at its memory limit is reported as every store reports a full disk (ENOSPC)."""
        import redis

        try:
            return pipe.execute()
        except redis.exceptions.OutOfMemoryError as exc:
            raise OSError(errno.ENOSPC, f"{self.url}: Redis is at its memory limit ({exc})") from exc

    def exists(self, key: str) -> bool:
        return bool(self.client.exists(self._key(key)))

    def delete(self, key: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self._key(key))
        pipe.zrem(self.times_key, key)
        pipe.execute()

    def list(self, prefix: str) -> Iterator[str]:
        _check_prefix(prefix)
        skip = len(self.prefix)
        for raw in self.client.scan_iter(match=_glob_escape(self.prefix + prefix) + "*", count=1000):
            key = raw.decode()[skip:]
            if key != self.times_key[skip:]:
                yield key

    def size(self, key: str) -> int | None:
        return int(self.client.strlen(self._key(key))) if self.exists(key) else None

    def written_at(self, key: str) -> float | None:
        return self.client.zscore(self.times_key, check_key(key))


def check_key(key: str) -> str:
    """`key` if it names a value inside a store's root: '/'-separated segments, none empty, '.' or '..', with no
    backslash or NUL anywhere; else InvalidKey."""
    if not isinstance(key, str) or "\\" in key or "\0" in key or \
            any(segment in ("", ".", "..") for segment in key.split("/")):
        raise InvalidKey(f"not a key inside the store: {key!r:.200}")
    return key


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


def _check_prefix(prefix: str) -> None:
    """Listing is by folder on every backend: a prefix is '' or a key followed by '/'."""
    if prefix and not prefix.endswith("/"):
        raise InvalidKey(f"list prefixes end with '/', not {prefix!r:.200}")
    if prefix:
        check_key(prefix[:-1])


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def open_blobs(url: str) -> BlobStore:
    """A store for `url`: redis://, rediss://, file://, memory:// or any fsspec protocol, or a plain directory."""
    scheme = urlparse(url).scheme if "://" in url else ""
    if scheme in ("redis", "rediss", "unix"):
        return RedisBlobs(url)
    return FsspecBlobs(url)


class TieredBlobs:
    """Warm (Redis, shared by workers) in front of cold (a directory or object store, the durable copy).

    Writes go to cold, then warm, so a value is durable before any worker can see it warm. Reads try warm, then
    cold, refilling warm from cold; `copies` yields each tier's copy so a reader can fall back past a damaged one.
    Warm may forget values (eviction, restart): cold still has them.
    """

    def __init__(self, warm: BlobStore, cold: BlobStore) -> None:
        self.warm, self.cold = warm, cold
        self.url = f"{warm.url} + {cold.url}"

    def copies(self, key: str) -> Iterator[bytes]:
        value = self.warm.get(check_key(key))
        if value is not None:
            yield value
        value = self.cold.get(key)
        if value is not None:
            self.warm.put(key, value)
            yield value

    def get(self, key: str) -> bytes | None:
        return next(self.copies(key), None)

    def put(self, key: str, data: bytes) -> None:
        self.cold.put(check_key(key), data)
        self.warm.put(key, data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        if not self.cold.put_if_absent(check_key(key), data):
            return False
        self.warm.put(key, data)
        return True

    def exists(self, key: str) -> bool:
        return self.warm.exists(check_key(key)) or self.cold.exists(key)

    def delete(self, key: str) -> None:
        self.cold.delete(check_key(key))
        self.warm.delete(key)

    def list(self, prefix: str) -> Iterator[str]:
        _check_prefix(prefix)
        yield from sorted(set(self.cold.list(prefix)) | set(self.warm.list(prefix)))

    def written_at(self, key: str) -> float | None:
        return self.cold.written_at(check_key(key)) or self.warm.written_at(key)

    def size(self, key: str) -> int | None:
        return self.cold.size(check_key(key)) or self.warm.size(key)


def open_tiered(cold_url: str, warm_url: str | None = None) -> BlobStore:
    """The cold store alone, or warm Redis in front of it."""
    cold = open_blobs(cold_url)
    return TieredBlobs(open_blobs(warm_url), cold) if warm_url else cold
