"""Sinkhorn projection of mHC's residual mixing logits onto (nearly) doubly stochastic matrices."""

from __future__ import annotations

import torch


def sinkhorn(logits: torch.Tensor, iters: int, eps: float) -> torch.Tensor:
    """logits [..., n, n] (float32) -> comb [..., n, n]: row softmax + eps, column normalize, then iters-1 rounds of
    row and column normalization (the official order)."""
    # Out of place, so that training can differentiate through it (the same values as in place).
    comb = torch.softmax(logits, dim=-1) + eps
    comb = comb / (comb.sum(dim=-2, keepdim=True) + eps)
    for _ in range(iters - 1):
        comb = comb / (comb.sum(dim=-1, keepdim=True) + eps)
        comb = comb / (comb.sum(dim=-2, keepdim=True) + eps)
    return comb
