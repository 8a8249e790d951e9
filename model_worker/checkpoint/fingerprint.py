"""Checkpoint fingerprint: sha256 over the layout, the canonical config JSON, every safetensors header and every
shard's content hash. Content hashes are the slow part (they read every byte), so they are cached per shard in
`.fingerprint.json` next to the checkpoint and reused while the shard's size and mtime are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from model_worker.checkpoint.checkpoint_dir import CheckpointDir, open_checkpoint_dir

CACHE_FILE = ".fingerprint.json"
_CACHE_VERSION = 1
_CHUNK = 16 << 20


def model_fingerprint(checkpoint: str | Path | CheckpointDir) -> str:
    """Hex fingerprint of the checkpoint at `checkpoint` (a directory, or an already opened CheckpointDir)."""
    ckpt = checkpoint if isinstance(checkpoint, CheckpointDir) else open_checkpoint_dir(checkpoint)
    cache_path = ckpt.path / CACHE_FILE
    cached = _read_cache(cache_path)
    shards: dict[str, dict[str, object]] = {}
    digest = hashlib.sha256(b"deepseek-v4-checkpoint/1\0")
    digest.update(ckpt.layout.encode() + b"\0")
    digest.update(json.dumps(ckpt.config.to_official_dict(), sort_keys=True).encode() + b"\0")
    for name in sorted(ckpt.files):
        file = ckpt.files[name]
        stat = file.path.stat()
        record = cached.get(name)
        if not (isinstance(record, dict) and record.get("size") == stat.st_size
                and record.get("mtime_ns") == stat.st_mtime_ns and isinstance(record.get("sha256"), str)):
            record = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": _file_sha256(file.path)}
        shards[name] = record
        digest.update(name.encode() + b"\0" + file.header_bytes + b"\0" + str(record["sha256"]).encode() + b"\0")
    if shards != cached:
        _write_cache(cache_path, shards)
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_cache(path: Path) -> dict[str, object]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict) or raw.get("version") != _CACHE_VERSION or not isinstance(raw.get("shards"), dict):
        return {}
    return raw["shards"]


def _write_cache(path: Path, shards: dict[str, dict[str, object]]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"version": _CACHE_VERSION, "shards": shards}, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        # A read-only checkpoint (shared mount) still gets a fingerprint; it is just recomputed next time.
        tmp.unlink(missing_ok=True)
