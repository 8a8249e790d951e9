"""A run's checkpoint -> a model directory in the official DeepSeek-V4 checkpoint layout, which the engine (and
llama.cpp's converter) load like the released snapshots.

The weights are the run's float masters rounded through the writer's `quantize_state_dict`: with QAT these are
exactly the values the training forward used. `training.json` beside them records the run's stages, the earlier
ones (read from the `init` model's record) first: each stage's settings, steps, tokens and vocabulary, from which its
batches can be replayed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from model_worker.checkpoint.layouts import OFFICIAL
from model_worker.checkpoint.writer import quantize_state_dict, write_state_dict
from model_worker.config import load_config
from training.run import CHECKPOINT

TRAINING_RECORD = "training.json"
SHARD_BYTES = 64 << 20  # files a git host takes (GitHub refuses files over 100 MB)


def export(run: Path, out: Path) -> Path:
    saved = torch.load(run / CHECKPOINT, weights_only=False)
    config = load_config(saved["settings"]["config"])
    weights = quantize_state_dict(saved["model"], config)
    size = sum(tensor.numel() * tensor.element_size() for tensor in weights.values())
    write_state_dict(weights, config, out, OFFICIAL, num_shards=-(-size // SHARD_BYTES))
    init = saved["settings"]["init"]
    earlier = json.loads((Path(init) / TRAINING_RECORD).read_text())["stages"] if init else []
    stage = {key: saved[key] for key in ("settings", "step", "tokens", "vocabulary")}
    (out / TRAINING_RECORD).write_text(json.dumps({"stages": [*earlier, stage]}, indent=1, sort_keys=True) + "\n")
    return out


def stages(model_dir: Path) -> list[dict]:
    """The exported model's training stages, in order."""
    return json.loads((model_dir / TRAINING_RECORD).read_text())["stages"]
