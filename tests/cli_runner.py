"""Running `python -m model_worker` as a user does (a real process, a clean environment), and the small checkpoint
the command-line tests share."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SMALL_JSON = {
    "vocab_size": 512, "dim": 128, "moe_inter_dim": 64, "n_layers": 4, "n_hash_layers": 1, "n_heads": 4,
    "n_routed_experts": 8, "n_activated_experts": 2, "q_lora_rank": 128, "head_dim": 128, "rope_head_dim": 64,
    "o_groups": 2, "o_lora_rank": 64, "window_size": 8, "index_n_heads": 16, "index_head_dim": 64, "index_topk": 3,
    "compress_ratios": [0, 4, 16, 4, 0], "original_seq_len": 16, "rope_factor": 4, "max_seq_len": 4096,
}


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "model_worker", *args], capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    if check:
        assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc


def write_small_checkpoint(root: Path) -> Path:
    """A random official-layout checkpoint of the small config, written by the `init-checkpoint` command."""
    (root / "small.json").write_text(json.dumps(SMALL_JSON))
    run("init-checkpoint", "--config", str(root / "small.json"), "--format", "official", "--seed", "3",
        "--out", str(root / "ckpt"))
    return root / "ckpt"
