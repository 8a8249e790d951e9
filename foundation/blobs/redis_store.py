"""Blobs in one Redis database (`redis://HOST:PORT/DB[?prefix=P]`), listed without scanning the database.

Every folder of the key space has an index: a sorted set of its children (values, and folders ending in '/') scored
by the time of their last write, maintained in the same transaction as the write (a put adds the value to its folder
and the folder to its parent, up to the root; a delete, a Lua script, removes the value and every folder it leaves
empty). Listing a session reads its folders' indexes, whatever else the database holds; the write times serve the
collector's grace period. A store written before the indexes existed (a global write-time set, listed by SCAN) is
indexed once, on first use, by one SCAN.

As the warm tier the values carry a TTL, refreshed on every read and write, and so do the indexes: Redis forgets what
nobody used for that long (the cold tier has it all), and its memory limit and eviction policy bound the rest
(`memory_warnings` checks them at start-up). A store with a TTL is a cache: listing drops the index entries of
values that expired or were evicted.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse, urlsplit, urlunsplit

from foundation.blobs.keys import InvalidKey, check_key, check_prefix, folder_of, glob_escape

INDEX = "\0d:"  # P + INDEX + folder: the folder's index (no key of the session layout contains a NUL)
LAYOUT = "\0layout"  # P + LAYOUT: "2" once every value is in the indexes
OLD_TIMES = "\0written"  # layout 1's global write-time set, folded into the indexes and removed
_BATCH = 500

# KEYS: the value, the layout marker, then the indexes from the value's folder up to the root; ARGV: its name in each.
# The value goes, and each folder it leaves empty goes from its parent (an empty sorted set no longer exists),
# atomically with any put; an empty store keeps no marker either.
_DELETE = """
redis.call('DEL', KEYS[1])
for i = 3, #KEYS do
  redis.call('ZREM', KEYS[i], ARGV[i - 2])
  if redis.call('EXISTS', KEYS[i]) == 1 then return end
end
redis.call('DEL', KEYS[2])
"""
# KEYS: the value, then its indexes as above; ARGV: a score, a TTL in ms (0: none), then the names. Indexes a value
# written without them, if it is still there.
_INDEX_IF_PRESENT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], 'NX', ARGV[1], ARGV[i + 1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 1
"""


class RedisBlobs:
    def __init__(self, url: str, ttl_seconds: float | None = None) -> None:
        import redis

        self.url, self.ttl_seconds = without_password(url), ttl_seconds or None
        query = dict(part.split("=", 1) for part in urlparse(url).query.split("&") if "=" in part)
        self.prefix = query.get("prefix", "dsv4:")
        self.client = redis.Redis.from_url(url.split("?", 1)[0])
        self._delete_script = self.client.register_script(_DELETE)
        self._index_script = self.client.register_script(_INDEX_IF_PRESENT)
        self._indexed = False

    # -- keys -------------------------------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _index(self, folder: str) -> str:
        return self.prefix + INDEX + folder

    def _chain(self, key: str) -> tuple[list[str], list[str]]:
        """(index keys, the name in each) from the key's folder up to the root."""
        indexes, names = [], []
        while key:
            folder, name = folder_of(key)
            indexes.append(self._index(folder))
            names.append(name)
            key = folder
        return indexes, names

    @property
    def _ttl_ms(self) -> int:
        return int(self.ttl_seconds * 1000) if self.ttl_seconds else 0

    # -- the store ------------------------------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        with _errors(self.url):
            if not self.ttl_seconds:
                return self.client.get(self._key(key))
            pipe = self.client.pipeline(transaction=False)
            pipe.getex(self._key(key), px=self._ttl_ms)  # a read keeps the value, and its folders, warm
            for index in self._chain(key)[0]:
                pipe.pexpire(index, self._ttl_ms)
            return pipe.execute()[0]

    def put(self, key: str, data: bytes) -> None:
        self._write(key, data, only_if_absent=False)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        # A claim that loses still refreshes the key's write time: later, never earlier, so collection only waits
        # longer for it.
        return bool(self._write(key, data, only_if_absent=True))

    def _write(self, key: str, data: bytes, only_if_absent: bool) -> bool | None:
        stored, now = self._key(key), time.time()
        pipe = self.client.pipeline(transaction=True)
        pipe.set(stored, data, nx=only_if_absent, px=self._ttl_ms or None)
        for index, name in zip(*self._chain(key)):
            pipe.zadd(index, {name: now})
            if self.ttl_seconds:
                pipe.pexpire(index, self._ttl_ms)
        with _errors(self.url):
            return pipe.execute()[0]

    def exists(self, key: str) -> bool:
        with _errors(self.url):
            return bool(self.client.exists(self._key(key)))

    def delete(self, key: str) -> None:
        indexes, names = self._chain(check_key(key))
        with _errors(self.url):
            self._delete_script(keys=[self._key(key), self.prefix + LAYOUT, *indexes], args=names)

    def list(self, prefix: str) -> Iterator[str]:
        """Every key under `prefix`, from the indexes (a folder at a time, in batches)."""
        check_prefix(prefix)
        self._ensure_indexed()
        folders = [prefix]
        while folders:
            folder = folders.pop()
            leaves = []
            with _errors(self.url):
                for raw, _ in self.client.zscan_iter(self._index(folder), count=1000):
                    name = raw.decode()
                    if name.endswith("/"):
                        folders.append(folder + name)
                    else:
                        leaves.append(folder + name)
            for start in range(0, len(leaves), _BATCH):
                yield from self._present(leaves[start : start + _BATCH])

    def _present(self, keys: list[str]) -> list[str]:
        """`keys` whose values exist. Without a TTL the indexes are exact; with one (a cache) values expire or are
        evicted on their own, and their index entries are dropped here."""
        if not self.ttl_seconds:
            return keys
        with _errors(self.url):
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.exists(self._key(key))
            found = pipe.execute()
            for key, there in zip(keys, found):
                if not there:  # deleting a cache entry is always safe, even one written again meanwhile
                    self.delete(key)
        return [key for key, there in zip(keys, found) if there]

    def folders(self, prefix: str) -> Iterator[str]:
        check_prefix(prefix)
        self._ensure_indexed()
        with _errors(self.url):
            names = [raw.decode() for raw, _ in self.client.zscan_iter(self._index(prefix), count=1000)]
        yield from (name[:-1] for name in names if name.endswith("/"))

    def size(self, key: str) -> int | None:
        with _errors(self.url):
            there, size = self.client.pipeline(transaction=False).exists(self._key(key)).strlen(
                self._key(key)).execute()
        return int(size) if there else None

    def written_at(self, key: str) -> float | None:
        folder, name = folder_of(check_key(key))
        self._ensure_indexed()
        with _errors(self.url):
            there, stamp = self.client.pipeline(transaction=False).exists(self._key(key)).zscore(
                self._index(folder), name).execute()
        return stamp if there else None

    # -- indexing a store written before the indexes ----------------------------------------------------------

    def _ensure_indexed(self) -> None:
        if self._indexed:
            return
        with _errors(self.url):
            if self.client.get(self.prefix + LAYOUT) != b"2":
                self.reindex()
        self._indexed = True

    def reindex(self) -> int:
        """Index every value under the prefix (one SCAN; idempotent, safe beside running writers, which index their
        own writes); returns how many values were found. Layout 1's write times carry over."""
        old_times, found, now = self.prefix + OLD_TIMES, 0, time.time()
        with _errors(self.url):
            pipe = self.client.pipeline(transaction=False)
            for raw in self.client.scan_iter(match=glob_escape(self.prefix) + "*", count=1000):
                key = raw.decode(errors="replace")[len(self.prefix) :]
                try:
                    check_key(key)
                except InvalidKey:
                    continue  # the indexes, the layout marker, layout 1's time set
                indexes, names = self._chain(key)
                score = self.client.zscore(old_times, key) or now
                self._index_script(keys=[raw, *indexes], args=[score, self._ttl_ms, *names], client=pipe)
                found += 1
                if len(pipe) >= _BATCH:
                    pipe.execute()
            pipe.execute()
            self.client.pipeline(transaction=True).delete(old_times).set(self.prefix + LAYOUT, b"2").execute()
        return found

    # -- the server's memory settings -------------------------------------------------------------------------

    def memory_warnings(self) -> list[str]:
        """What is wrong with this Redis as a cache (its memory limit and eviction policy), for an operator; the
        CONFIG command may be disabled or not permitted, which is reported, not raised."""
        import redis

        try:
            config = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
                      for k, v in self.client.config_get("maxmemory*").items()}
        except redis.exceptions.RedisError as exc:
            return [f"cannot read the memory settings of {self.url} ({exc}); make sure it has maxmemory and an "
                    "eviction policy (allkeys-lru)"]
        limit, policy = int(config.get("maxmemory", 0) or 0), config.get("maxmemory-policy", "noeviction")
        if not limit:
            return [f"no memory limit on {self.url} (maxmemory 0, policy {policy}): the warm tier grows with every "
                    "session used within its TTL; give it a Redis of its own with maxmemory and allkeys-lru"]
        if policy == "noeviction":
            return [f"maxmemory-policy noeviction on {self.url}: past {limit:,} bytes, values are no longer "
                    "cached (every read goes to the cold tier); use allkeys-lru"]
        if policy.startswith("volatile") and not self.ttl_seconds:
            return [f"maxmemory-policy {policy} on {self.url} evicts only values with a TTL and the warm tier "
                    "sets none (warm_ttl_hours); use allkeys-lru"]
        return []


def without_password(url: str) -> str:
    """How a store names itself in messages and statistics (a session's bytes by tier reach clients)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


@contextmanager
def _errors(url: str) -> Iterator[None]:
    """Redis failures as the operating system's: at its memory limit like a full disk (ENOSPC), unreachable like a
    refused connection, so that callers (the tiered store, the worker's status codes) treat every backend alike."""
    import redis

    try:
        yield
    except redis.exceptions.OutOfMemoryError as exc:
        raise OSError(errno.ENOSPC, f"{url}: Redis is at its memory limit ({exc})") from exc
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise ConnectionError(errno.ECONNREFUSED, f"{url}: Redis is unreachable ({exc})") from exc
