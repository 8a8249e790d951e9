"""Fingerprints: stable, cached next to the checkpoint, recomputed when a shard's size or mtime changes, and
sensitive to weights and config. Also the `init-checkpoint` command."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest
from checkpoint_testlib import copy_checkpoint
from small_config import SMALL

from model_worker.checkpoint import load_checkpoint, model_fingerprint
from model_worker.checkpoint.cli import add_init_checkpoint_parser
from model_worker.checkpoint.fingerprint import CACHE_FILE
from model_worker.checkpoint.safetensors_io import SafetensorsFile

SHARD = "model-00002-of-00003.safetensors"


@pytest.fixture
def ckpt(official_dir: Path, tmp_path: Path) -> Path:
    return copy_checkpoint(official_dir, tmp_path / "ckpt")


def _cache(path: Path) -> dict:
    return json.loads((path / CACHE_FILE).read_text())


def test_fingerprint_is_stable_and_cached(ckpt: Path) -> None:
    first = model_fingerprint(ckpt)
    assert len(first) == 64 and int(first, 16) >= 0
    assert set(_cache(ckpt)["shards"]) == {p.name for p in ckpt.glob("*.safetensors")}
    _, info = load_checkpoint(ckpt)
    assert info.fingerprint == first == model_fingerprint(ckpt)


def test_cached_content_hash_is_reused_until_the_shard_changes(ckpt: Path) -> None:
    original = model_fingerprint(ckpt)
    cache = _cache(ckpt)
    cache["shards"][SHARD]["sha256"] = "0" * 64
    (ckpt / CACHE_FILE).write_text(json.dumps(cache))
    assert model_fingerprint(ckpt) != original, "an unchanged shard must not be re-hashed"
    stat = (ckpt / SHARD).stat()
    os.utime(ckpt / SHARD, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert model_fingerprint(ckpt) == original
    assert _cache(ckpt)["shards"][SHARD]["sha256"] != "0" * 64


def test_fingerprint_changes_with_weights(ckpt: Path) -> None:
    original = model_fingerprint(ckpt)
    shard = ckpt / SHARD
    entry = next(iter(SafetensorsFile(shard).entries.values()))
    data = bytearray(shard.read_bytes())
    data[entry.begin] ^= 0x01
    shard.write_bytes(bytes(data))
    assert model_fingerprint(ckpt) != original


def test_fingerprint_changes_with_config(ckpt: Path) -> None:
    original = model_fingerprint(ckpt)
    config_path = ckpt / "inference" / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "rope_theta": 20000.0}))
    assert model_fingerprint(ckpt) != original


def test_corrupt_cache_is_ignored(ckpt: Path) -> None:
    original = model_fingerprint(ckpt)
    (ckpt / CACHE_FILE).write_text("{not json")
    assert model_fingerprint(ckpt) == original


def test_init_checkpoint_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config_file = tmp_path / "small.json"
    config_file.write_text(json.dumps(SMALL.to_official_dict()))
    parser = argparse.ArgumentParser()
    add_init_checkpoint_parser(parser.add_subparsers(dest="command"))
    runs = []
    for seed in (1, 1, 2):
        out = tmp_path / f"run{len(runs)}"
        args = parser.parse_args(["init-checkpoint", "--config", str(config_file), "--format", "hf", "--seed",
                                  str(seed), "--out", str(out), "--dtype", "bfloat16", "--num-shards", "3"])
        assert args.func(args) == 0
        runs.append((out, capsys.readouterr().out))
    fingerprints = [model_fingerprint(out) for out, _ in runs]
    assert fingerprints[0] == fingerprints[1] != fingerprints[2]
    assert fingerprints[0] in runs[0][1]
    _, info = load_checkpoint(runs[0][0], fingerprint=False)
    assert info.layout == "hf" and len(info.shards) == 3
    entries = SafetensorsFile(runs[0][0] / info.shards[0]).entries
    assert {e.dtype for e in entries.values()} <= {"BF16", "I64"}
    with pytest.raises(ValueError, match="--dtype"):
        bad = parser.parse_args(["init-checkpoint", "--config", "tiny", "--format", "official", "--out",
                                 str(tmp_path / "bad"), "--dtype", "float32"])
        bad.func(bad)
