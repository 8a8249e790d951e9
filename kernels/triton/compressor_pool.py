"""compressor_pool as a Triton kernel: per-channel softmax over a group's slots, weighted sum of the slot features.

Same contract as kernels/ref/compressor_pool.py. One program per (group, block of channels) holds the group's whole
[S, BLOCK_C] tile of scores and features (S = m or 2m slots: 8 for CSA, 128 for HCA), so the softmax over S is one
column-wise max / exp / sum in registers, computed in the twin's order (weights = exp(score - max) / sum, then the
weighted sum) in float32. A -inf score gets weight exp(-inf) = 0, which is how CSA's first group drops its absent
previous-group slots; padded slots load as -inf too, padded channels as 0 (never stored, and never -inf - -inf).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_TILE_ELEMS = 4096  # [S, BLOCK_C] elements per program: two float32 tiles stay in registers


@triton.jit
def _compressor_pool_kernel(kv_ptr, score_ptr, out_ptr, S, C,
                            BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr):
    g = tl.program_id(0).to(tl.int64)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_s = tl.arange(0, BLOCK_S)
    c_mask = offs_c < C
    mask = (offs_s[:, None] < S) & c_mask[None, :]
    offs = (g * S + offs_s[:, None]) * C + offs_c[None, :]
    score = tl.load(score_ptr + offs, mask=mask, other=float("-inf"))
    score = tl.where(c_mask[None, :], score, 0.0)
    kv = tl.load(kv_ptr + offs, mask=mask, other=0.0)
    peak = tl.max(score, axis=0)
    e = tl.exp(score - peak[None, :])
    weights = e / tl.sum(e, axis=0)[None, :]
    tl.store(out_ptr + g * C + offs_c, tl.sum(kv * weights, axis=0), mask=c_mask)


def compressor_pool(kv: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """kv, score [G, S, c] float32 (-inf scores weigh 0) -> entries [G, c] float32."""
    groups, slots, channels = kv.shape
    if slots == 0 or groups == 0 or channels == 0:
        return torch.zeros((groups, channels), dtype=torch.float32, device=kv.device)
    out = torch.empty((groups, channels), dtype=torch.float32, device=kv.device)
    kv, score = kv.float().contiguous(), score.float().contiguous()
    block_s = triton.next_power_of_2(slots)
    block_c = max(1, min(triton.next_power_of_2(channels), _TILE_ELEMS // block_s))
    grid = (groups, triton.cdiv(channels, block_c))
    _compressor_pool_kernel[grid](kv, score, out, slots, channels, BLOCK_S=block_s, BLOCK_C=block_c)
    return out
