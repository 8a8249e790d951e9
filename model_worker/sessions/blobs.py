"""Where session bytes live: a flat key -> bytes store with the few operations sessions need, on a directory, any
fsspec URL, or Redis.

Every `put` is all-or-nothing: a reader sees the whole value or no value (local files are written beside their key
and renamed; object stores and Redis replace a value in one request). `put_if_absent` is the one conditional write,
used to claim a session ID and a tenant's salt: atomic on local files (a hard link) and Redis (SET NX); on other
fsspec stores it is check-then-write, so two workers racing for one new ID there could both succeed.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from typing import Protocol
from urllib.parse import urlparse


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
        return f"{self.root}/{key}"

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
        """Write beside the key, flush to disk, then make it visible whole with `publish(partial, path)`."""
        path = self._path(key)
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
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

    def exists(self, key: str) -> bool:
        return self.fs.isfile(self._path(key))

    def delete(self, key: str) -> None:
        try:
            self.fs.rm_file(self._path(key))
        except FileNotFoundError:
            pass

    def list(self, prefix: str) -> Iterator[str]:
        _check_prefix(prefix)
        base = self._path(prefix.rstrip("/"))
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

    def get(self, key: str) -> bytes | None:
        return self.client.get(self.prefix + key)

    def put(self, key: str, data: bytes) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.prefix + key, data)
        pipe.zadd(self.times_key, {key: time.time()})
        pipe.execute()

    def put_if_absent(self, key: str, data: bytes) -> bool:
        # Value and write time in one transaction; the time is refreshed even when the key exists (harmless).
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.prefix + key, data, nx=True)
        pipe.zadd(self.times_key, {key: time.time()}, nx=True)
        created, _ = pipe.execute()
        return bool(created)

    def exists(self, key: str) -> bool:
        return bool(self.client.exists(self.prefix + key))

    def delete(self, key: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.prefix + key)
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
        return int(self.client.strlen(self.prefix + key)) if self.exists(key) else None

    def written_at(self, key: str) -> float | None:
        return self.client.zscore(self.times_key, key)


def _check_prefix(prefix: str) -> None:
    """Listing is by folder on every backend: a prefix is '' or ends with '/'."""
    if prefix and not prefix.endswith("/"):
        raise ValueError(f"list prefixes end with '/', not {prefix!r}")


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
        value = self.warm.get(key)
        if value is not None:
            yield value
        value = self.cold.get(key)
        if value is not None:
            self.warm.put(key, value)
            yield value

    def get(self, key: str) -> bytes | None:
        return next(self.copies(key), None)

    def put(self, key: str, data: bytes) -> None:
        self.cold.put(key, data)
        self.warm.put(key, data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        if not self.cold.put_if_absent(key, data):
            return False
        self.warm.put(key, data)
        return True

    def exists(self, key: str) -> bool:
        return self.warm.exists(key) or self.cold.exists(key)

    def delete(self, key: str) -> None:
        self.cold.delete(key)
        self.warm.delete(key)

    def list(self, prefix: str) -> Iterator[str]:
        yield from sorted(set(self.cold.list(prefix)) | set(self.warm.list(prefix)))

    def written_at(self, key: str) -> float | None:
        return self.cold.written_at(key) or self.warm.written_at(key)

    def size(self, key: str) -> int | None:
        return self.cold.size(key) or self.warm.size(key)


def open_tiered(cold_url: str, warm_url: str | None = None) -> BlobStore:
    """The cold store alone, or warm Redis in front of it."""
    cold = open_blobs(cold_url)
    return TieredBlobs(open_blobs(warm_url), cold) if warm_url else cold
