"""A run's checkpoint -> a model directory in the official DeepSeek-V4 checkpoint layout, which the engine (and
llama.cpp's converter) load like the released snapshots.

The weights are the run's float masters rounded through the writer's `quantize_state_dict`: with QAT these are
exactly the values the training forward used. `training.json` beside them records the run (settings, step, tokens).
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


def export(run: Path, out: Path) -> Path:
    saved = torch.load(run / CHECKPOINT, weights_only=False)
    config = load_config(saved["settings"]["config"])
    write_state_dict(quantize_state_dict(saved["model"], config), config, out, OFFICIAL, num_shards=1)
    record = {"settings": saved["settings"], "step": saved["step"], "tokens": saved["tokens"]}
    (out / TRAINING_RECORD).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return out
