"""The per-rank layout of DeepSeek's `inference/convert.py`: one `model{rank}-mp{N}.safetensors` per tensor-parallel
rank, each holding that rank's part of every tensor under the official names (routed experts: only the rank's
experts, keeping their global index; `wo_a` dequantized to BF16 without its scale; expert weights as F4; the shared
expert whole). `checkpoint-split` adds `mp_split.json`, which ties the files to the checkpoint they came from.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from model_worker.checkpoint.errors import CheckpointError

MANIFEST_FILE = "mp_split.json"
_FORMAT = "deepseek-v4-mp-split/1"
_RANK_FILE = re.compile(r"^model(\d+)-mp(\d+)\.safetensors$")


def rank_file_name(rank: int, size: int) -> str:
    return f"model{rank}-mp{size}.safetensors"


def find_split_size(path: Path) -> int | None:
    """N when `path` holds the files of an N-way split (all of them and nothing else), None when it holds none."""
    names = [p.name for p in path.glob("*.safetensors")]
    sizes = {int(m[2]) for m in map(_RANK_FILE.match, names) if m}
    if not sizes:
        return None
    if len(sizes) > 1:
        raise CheckpointError(f"{path}: holds per-rank files of splits over {sorted(sizes)} ranks; keep one split "
                              f"per directory")
    size = sizes.pop()
    expected = {rank_file_name(rank, size) for rank in range(size)}
    missing, extra = sorted(expected - set(names)), sorted(set(names) - expected)
    if missing or extra:
        raise CheckpointError(f"{path}: a {size}-way split needs exactly {rank_file_name(0, size)} .. "
                              f"{rank_file_name(size - 1, size)}; missing {missing[:3]}, unexpected {extra[:3]}")
    return size


@dataclass(frozen=True)
class SplitManifest:
    """What `checkpoint-split` wrote: the source checkpoint's fingerprint and config, and each file's content hash.

    The fingerprint names weights, not files: these files hold the source's weights (cut per rank, `wo_a`
    dequantized losslessly), so they keep its fingerprint, valid while their content hashes still match."""

    size: int
    source_fingerprint: str
    config: dict
    files: dict[str, dict[str, object]]  # file name -> {"size", "sha256"}

    def to_json(self) -> dict:
        return {"format": _FORMAT, "tensor_parallel": self.size, "source_fingerprint": self.source_fingerprint,
                "config": self.config, "files": self.files}


def read_manifest(path: Path, size: int) -> SplitManifest | None:
    """The manifest of the `size`-way split at `path`; None when there is none (plain convert.py output)."""
    file = path / MANIFEST_FILE
    if not file.exists():
        return None
    try:
        raw = json.loads(file.read_text())
        manifest = SplitManifest(int(raw["tensor_parallel"]), str(raw["source_fingerprint"]), dict(raw["config"]),
                                 {str(k): dict(v) for k, v in raw["files"].items()})
        ok = raw.get("format") == _FORMAT
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{file}: not a checkpoint-split manifest ({exc})") from exc
    expected = {rank_file_name(rank, size) for rank in range(size)}
    if not ok or manifest.size != size or set(manifest.files) != expected:
        raise CheckpointError(f"{file}: does not describe the {size}-way split in {path} (format {raw.get('format')!r},"
                              f" {manifest.size} ranks, files {sorted(manifest.files)[:3]})")
    return manifest


def write_manifest(path: Path, manifest: SplitManifest) -> None:
    tmp = path / f"{MANIFEST_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest.to_json(), indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path / MANIFEST_FILE)
