"""A compressor's per-token features: its kv and gating projections (float32, dense weights) and the gate's bias for
the token's slot in its group."""

from __future__ import annotations

import torch

from kernels.ref.fp8_linear import fp8_linear


def compressor_project(
    x: torch.Tensor, wkv: torch.Tensor, wgate: torch.Tensor, ape: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """x [T, dim] -> [T, 2F] float32: x @ wkv^T, then x @ wgate^T + ape[positions % m].

    Args:
        wkv, wgate: [F, dim] dense weights (computed in float32).
        ape: [m, F] the gating bias of each slot of a group of m tokens.
        positions: [T] int64 each token's position.
    """
    x = x.float()
    kv = fp8_linear(x, wkv, None, False, torch.float32)
    score = fp8_linear(x, wgate, None, False, torch.float32) + ape.float()[positions % ape.shape[0]]
    return torch.cat((kv, score), dim=-1)
