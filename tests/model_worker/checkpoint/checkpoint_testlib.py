"""Helpers shared by the checkpoint tests: a small config with every layer kind and logits comparisons."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch

from model_worker.config import ModelConfig
from model_worker.model import DeepseekV4, ForwardBatch

# Window-only, CSA and HCA layers, a hash-routed layer, YaRN (original_seq_len < max_seq_len), 16 index heads, MTP.
SMALL = ModelConfig(
    vocab_size=512, dim=128, moe_inter_dim=64, n_layers=4, n_hash_layers=1, n_heads=4, n_routed_experts=8,
    n_activated_experts=2, q_lora_rank=64, head_dim=128, rope_head_dim=64, o_groups=2, o_lora_rank=32, window_size=8,
    index_n_heads=16, index_head_dim=64, index_topk=3, compress_ratios=(0, 4, 16, 4, 0), original_seq_len=16,
    rope_factor=4, max_seq_len=256,
)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    # NOTE: on a shared 2-core box, intra-op threads contend with other processes and make tiny ops ~40x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def logits(model: DeepseekV4, ids: torch.Tensor, draft: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """All-position logits (and the MTP draft logits when asked) of one fresh sequence."""
    out = model(ForwardBatch.single(ids, model.new_state(), logits="all", draft_logits=draft))
    return out.logits, out.mtp_logits


def rel_err(ours: torch.Tensor, theirs: torch.Tensor) -> torch.Tensor:
    """Per-position ||ours - theirs|| / ||theirs||."""
    return (ours.float() - theirs.float()).norm(dim=-1) / theirs.float().norm(dim=-1)


def copy_checkpoint(src: Path, dst: Path) -> Path:
    """A private copy to damage, without the fingerprint cache."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".fingerprint.json"))
    return dst
