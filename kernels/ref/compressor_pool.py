"""The compressor's gated pooling: per-channel softmax over a group's slots, weighted sum of their features."""

from __future__ import annotations

import torch


def compressor_pool(kv: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """kv, score [G, S, c] float32 (S = m, or 2m with CSA's overlap slots; -inf scores weigh 0) -> entries [G, c]."""
    return (kv * torch.softmax(score, dim=1)).sum(dim=1)
