"""Checkpoints: random initialization, the official and transformers safetensors layouts, fingerprints.

`load_checkpoint(dir, tp=...)` detects the layout and returns (model, CheckpointInfo), whole or one tensor-parallel
rank's share; `write_random_checkpoint` and `write_state_dict` write either layout; `split_checkpoint` writes
convert.py's per-rank files; `model_fingerprint(dir)` identifies a checkpoint's exact weights, in any layout.
"""

from model_worker.checkpoint.errors import CheckpointConfigError, CheckpointError
from model_worker.checkpoint.fingerprint import model_fingerprint
from model_worker.checkpoint.layouts import HF, OFFICIAL
from model_worker.checkpoint.loader import CheckpointInfo, load_checkpoint, resident_bytes_per_expert_param
from model_worker.checkpoint.split_writer import split_checkpoint
from model_worker.checkpoint.writer import dequantize_state_dict, write_random_checkpoint, write_state_dict

__all__ = [
    "HF", "OFFICIAL", "CheckpointConfigError", "CheckpointError", "CheckpointInfo", "dequantize_state_dict",
    "load_checkpoint", "model_fingerprint", "resident_bytes_per_expert_param", "split_checkpoint",
    "write_random_checkpoint", "write_state_dict",
]
