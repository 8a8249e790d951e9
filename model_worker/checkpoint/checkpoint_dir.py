"""A checkpoint directory: its shards (with or without `model.safetensors.index.json`), which shard holds each
tensor, its layout and its config. Opening one parses and cross-checks every header and the index; it reads no
weight bytes, so a broken checkpoint fails before any memory is spent on it.

A directory split per rank by DeepSeek's convert.py (`model{rank}-mp{N}.safetensors`) opens one rank's file only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from model_worker.checkpoint.errors import CheckpointConfigError, CheckpointError
from model_worker.checkpoint.layouts import OFFICIAL, detect_layout, layout_config
from model_worker.checkpoint.mp_split import find_split_size, rank_file_name
from model_worker.checkpoint.safetensors_io import SafetensorsFile, TensorEntry
from model_worker.config import ConfigError, ModelConfig, config_from_dict
from model_worker.parallel import TensorParallel

INDEX_FILE = "model.safetensors.index.json"
ROOT_CONFIG = "config.json"
INFERENCE_CONFIG = "inference/config.json"


@dataclass
class CheckpointDir:
    """An opened checkpoint. `locations` maps each tensor name to the shard file (relative name) holding it.

    For a per-rank split, `split_size` is N and `files` holds rank `rank`'s file only; opened without a rank it holds
    no file (its config and fingerprint are still there)."""

    path: Path
    files: dict[str, SafetensorsFile]
    locations: dict[str, str]
    layout: str
    config: ModelConfig
    config_source: str
    split_size: int | None = None
    rank: int | None = None

    def entry(self, key: str) -> TensorEntry:
        return self.files[self.locations[key]].entries[key]

    def tensor(self, key: str) -> torch.Tensor:
        """A zero-copy view of tensor `key` (see SafetensorsFile.tensor)."""
        return self.files[self.locations[key]].tensor(key)


def open_checkpoint_dir(path: str | Path, tp: TensorParallel | None = None) -> CheckpointDir:
    """Open and validate the checkpoint at `path` (a directory); of a per-rank split, the file of rank `tp.rank`
    (which needs `tp.size` to be the split's size)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a checkpoint directory")
    split_size = find_split_size(path)
    if split_size is not None:
        return _open_split(path, split_size, tp)
    files, locations = _read_shards(path)
    layout = detect_layout(set(locations))
    if layout is None:
        raise CheckpointError(f"{path}: cannot tell the layout: no `embed.weight` (official) and no "
                              f"`model.embed_tokens.weight` (transformers) tensor")
    config, source = _read_config(path, layout)
    return CheckpointDir(path, files, locations, layout, config, source)


def _open_split(path: Path, size: int, tp: TensorParallel | None) -> CheckpointDir:
    # convert.py writes official names only, so the layout is known before any header is read.
    config, source = _read_config(path, OFFICIAL)
    if tp is None:
        return CheckpointDir(path, {}, {}, OFFICIAL, config, source, split_size=size)
    if tp.size != size:
        raise CheckpointError(
            f"{path}: these files are split for {size} tensor-parallel ranks ({rank_file_name(0, size)} ...), "
            f"not {tp.size}; run with --tensor-parallel {size}, load the original checkpoint, or re-split it with "
            f"`python -m model_worker checkpoint-split SRC DST --tensor-parallel {tp.size}`")
    name = rank_file_name(tp.rank, size)
    file = SafetensorsFile(path / name)
    if detect_layout(set(file.entries)) != OFFICIAL:
        raise CheckpointError(f"{path / name}: no `embed.weight`; per-rank files carry the official tensor names")
    return CheckpointDir(path, {name: file}, dict.fromkeys(file.entries, name), OFFICIAL, config, source,
                         split_size=size, rank=tp.rank)


def _read_shards(path: Path) -> tuple[dict[str, SafetensorsFile], dict[str, str]]:
    index_path = path / INDEX_FILE
    if index_path.exists():
        return _read_indexed(path, index_path)
    names = sorted(p.name for p in path.glob("*.safetensors"))
    if not names:
        raise CheckpointError(f"{path}: no {INDEX_FILE} and no *.safetensors file")
    files = {name: SafetensorsFile(path / name) for name in names}
    locations: dict[str, str] = {}
    for name, file in files.items():
        for key in file.entries:
            if key in locations:
                raise CheckpointError(f"{path}: tensor {key!r} is stored twice ({locations[key]} and {name})")
            locations[key] = name
    return files, locations


def _read_indexed(path: Path, index_path: Path) -> tuple[dict[str, SafetensorsFile], dict[str, str]]:
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{index_path}: not a safetensors index with a weight_map ({exc})") from exc
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index_path}: weight_map must map tensor names to shard file names")
    by_shard: dict[str, set[str]] = {}
    for key, shard in weight_map.items():
        by_shard.setdefault(shard, set()).add(key)
    missing = sorted(shard for shard in by_shard if not (path / shard).is_file())
    if missing:
        example = min(by_shard[missing[0]])
        raise CheckpointError(f"{path}: shard file(s) {missing} listed in {INDEX_FILE} are missing "
                              f"(e.g. {missing[0]} should hold {example!r})")
    files = {shard: SafetensorsFile(path / shard) for shard in sorted(by_shard)}
    for shard, keys in by_shard.items():
        absent = sorted(keys - set(files[shard].entries))
        if absent:
            raise CheckpointError(f"{path / shard}: missing tensor(s) that {INDEX_FILE} places there: "
                                  f"{_few(absent)}")
    for shard, keys in by_shard.items():
        extra = sorted(set(files[shard].entries) - keys)
        if extra:
            raise CheckpointError(f"{path / shard}: unexpected tensor(s) not listed in {INDEX_FILE}: {_few(extra)}")
    return files, dict(weight_map)


def _read_config(path: Path, layout: str) -> tuple[ModelConfig, str]:
    # The official snapshot ships both files; inference/config.json uses the model's own field names, so it wins.
    candidates = [INFERENCE_CONFIG, ROOT_CONFIG] if layout == OFFICIAL else [ROOT_CONFIG]
    source = next((name for name in candidates if (path / name).is_file()), None)
    if source is None:
        raise CheckpointError(f"{path}: no config file (looked for {' and '.join(candidates)})")
    file = path / source
    try:
        raw = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointConfigError(f"{file}: unreadable config: {exc}") from exc
    if not isinstance(raw, dict):
        raise CheckpointConfigError(f"{file}: config must be a JSON object")
    if raw.get("model_type", "deepseek_v4") != "deepseek_v4":
        raise CheckpointConfigError(f"{file}: model_type {raw['model_type']!r} is not deepseek_v4")
    try:
        config = config_from_dict(raw)
    except ConfigError as exc:
        raise CheckpointConfigError(f"{file}: {exc}") from exc
    return layout_config(config, layout), source


def _few(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
