"""Checkpoint fingerprint: sha256 over the layout, the canonical config JSON, every safetensors header and every
shard's content hash. Content hashes are the slow part (they read every byte), so they are cached per file in
`.fingerprint.json` next to the checkpoint and reused while the file's size and mtime are unchanged.

The fingerprint names weights (stored sessions are tied to it), and a session saved at N ranks resumes at M, so it
must not depend on how the weights are laid out. Loading a whole checkpoint at any tensor-parallel size hashes the
same files. Per-rank files hold different bytes, and a rank that reads only its own file cannot recompute the
source's hash; so `checkpoint-split` records the source's fingerprint with each file's content hash
(`mp_split.json`), and a rank reports that fingerprint once its own file's hash matches the record. Per-rank files
without that record (plain convert.py output) are named by their own content: nothing proves which weights they
came from, so sessions saved against the source checkpoint do not resume on them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from model_worker.checkpoint.checkpoint_dir import CheckpointDir, open_checkpoint_dir
from model_worker.checkpoint.errors import CheckpointError
from model_worker.checkpoint.mp_split import rank_file_name, read_manifest

CACHE_FILE = ".fingerprint.json"
_CACHE_VERSION = 1
_CHUNK = 16 << 20


def model_fingerprint(checkpoint: str | Path | CheckpointDir) -> str:
    """Hex fingerprint of the checkpoint at `checkpoint` (a directory, or an already opened CheckpointDir)."""
    ckpt = checkpoint if isinstance(checkpoint, CheckpointDir) else open_checkpoint_dir(checkpoint)
    if ckpt.split_size is not None:
        return _split_fingerprint(ckpt)
    hashes = content_hashes(ckpt.path, ckpt.files)
    digest = hashlib.sha256(b"deepseek-v4-checkpoint/1\0")
    digest.update(ckpt.layout.encode() + b"\0")
    digest.update(_canonical_config(ckpt.config.to_official_dict()) + b"\0")
    for name in sorted(ckpt.files):
        digest.update(name.encode() + b"\0" + ckpt.files[name].header_bytes + b"\0" + hashes[name].encode() + b"\0")
    return digest.hexdigest()


def content_hashes(path: Path, names: Iterable[str]) -> dict[str, str]:
    """sha256 of each named file in `path`, from the cache where the file is unchanged (the cache is updated)."""
    cached = _read_cache(path / CACHE_FILE)
    records = {}
    for name in names:
        stat = (path / name).stat()
        record = cached.get(name)
        if not (isinstance(record, dict) and record.get("size") == stat.st_size
                and record.get("mtime_ns") == stat.st_mtime_ns and isinstance(record.get("sha256"), str)):
            record = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": _file_sha256(path / name)}
        records[name] = record
    # Other files' records stay (ranks of a split each hash their own file); vanished files' records go.
    merged = {k: v for k, v in {**cached, **records}.items() if (path / k).is_file()}
    if merged != cached:
        _write_cache(path / CACHE_FILE, merged)
    return {name: str(record["sha256"]) for name, record in records.items()}


def _split_fingerprint(ckpt: CheckpointDir) -> str:
    size = ckpt.split_size
    assert size is not None, "only per-rank splits have a split size"
    manifest = read_manifest(ckpt.path, size)
    every_file = [rank_file_name(rank, size) for rank in range(size)]
    if manifest is None:
        digest = hashlib.sha256(b"deepseek-v4-mp-split/1\0")
        digest.update(_canonical_config(ckpt.config.to_official_dict()) + b"\0")
        for name, sha in sorted(content_hashes(ckpt.path, every_file).items()):
            digest.update(name.encode() + b"\0" + sha.encode() + b"\0")
        return digest.hexdigest()
    if _canonical_config(manifest.config) != _canonical_config(ckpt.config.to_official_dict()):
        raise CheckpointError(f"{ckpt.path}: the config differs from the one the split was written with "
                              f"({ckpt.config_source} was changed after checkpoint-split)")
    # A rank vouches for its own file; together the ranks cover every file.
    mine = every_file if ckpt.rank is None else [rank_file_name(ckpt.rank, size)]
    for name, sha in content_hashes(ckpt.path, mine).items():
        if manifest.files[name].get("sha256") != sha:
            raise CheckpointError(f"{ckpt.path / name}: content differs from what checkpoint-split wrote (the file "
                                  f"changed after the split); split the source checkpoint again")
    return manifest.source_fingerprint


def _canonical_config(config: dict) -> bytes:
    return json.dumps(config, sort_keys=True).encode()


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


def _write_cache(path: Path, shards: dict[str, object]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"version": _CACHE_VERSION, "shards": shards}, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        # A read-only checkpoint (shared mount) still gets a fingerprint; it is just recomputed next time.
        tmp.unlink(missing_ok=True)
