"""Activation quantization round trips of the official numerics (quantize, then dequantize in place).

FP8 e4m3 with a power-of-two (ue8m0) scale per block (128 for GEMM inputs, 64 for the KV nope dims) and FP4 e2m1 per
block of 32 for the indexer's QK path. The result is exactly representable in bf16, so storing it loses nothing.
"""

from __future__ import annotations

import torch

from kernels.ref.formats import FP4_MAX, FP8_MAX, e2m1_decode, e2m1_encode, pow2_scale


def fp8_round_trip(x: torch.Tensor, block: int) -> torch.Tensor:
    """x [..., K] -> same shape and dtype, each block of `block` values rounded through e4m3 (K padded if needed)."""
    k = x.shape[-1]
    pad = -k % block
    xf = torch.nn.functional.pad(x.float(), (0, pad)) if pad else x.float()
    blocks = xf.unflatten(-1, (-1, block))
    scale = pow2_scale(blocks.abs().amax(-1, keepdim=True).clamp_min(1e-4), FP8_MAX)
    q = (blocks / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).float() * scale
    return q.flatten(-2)[..., :k].to(x.dtype)


def fp4_round_trip(x: torch.Tensor, block: int = 32) -> torch.Tensor:
    """x [..., K] (K % block == 0) -> same shape and dtype, each block rounded through e2m1 with a ue8m0 scale."""
    blocks = x.float().unflatten(-1, (-1, block))
    scale = pow2_scale(blocks.abs().amax(-1, keepdim=True).clamp_min(FP4_MAX * 2.0**-126), FP4_MAX)
    q = e2m1_decode(e2m1_encode(blocks / scale)) * scale
    return q.flatten(-2).to(x.dtype)
