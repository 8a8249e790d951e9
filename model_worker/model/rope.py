"""Partial interleaved RoPE on the last `rope_head_dim` dims of each vector.

Window-only layers rotate with rope_theta; compressed layers (their queries, window keys, compressor entries and
indexer) with compress_rope_theta and YaRN. No YaRN mscale: attention keeps softmax_scale = head_dim^-0.5.
"""

from __future__ import annotations

import math

import torch

from model_worker.config import ModelConfig


def inv_freq(config: ModelConfig, compressed: bool) -> torch.Tensor:
    """[rope_head_dim/2] float32 angular frequencies."""
    dim = config.rope_head_dim
    base = config.compress_rope_theta if compressed else config.rope_theta
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    if not compressed or config.original_seq_len <= 0:
        return freqs

    def correction_dim(rotations: float) -> float:
        return dim * math.log(config.original_seq_len / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(correction_dim(config.beta_fast)), 0)
    high = min(math.ceil(correction_dim(config.beta_slow)), dim - 1)
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / max(high - low, 1e-3)).clamp(0, 1)
    smooth = 1 - ramp
    return freqs / config.rope_factor * (1 - smooth) + freqs * smooth


def apply_rope(x: torch.Tensor, positions: torch.Tensor, freqs: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Rotate pairs (2i, 2i+1) of x's last `2 * len(freqs)` dims by position * freq (conjugate if inverse).

    Args:
        x: [T, ..., D]; positions: [T] int64; freqs: [R/2] float32.
    """
    rope_dim = 2 * freqs.shape[0]
    angles = positions.to(torch.float32)[:, None] * freqs.to(x.device)[None, :]
    angles = angles.view(angles.shape[0], *([1] * (x.dim() - 2)), -1)
    cos, sin = torch.cos(angles), torch.sin(angles)
    if inverse:
        sin = -sin
    rope = x[..., -rope_dim:].float().unflatten(-1, (-1, 2))
    even, odd = rope[..., 0], rope[..., 1]
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)
    return torch.cat((x[..., :-rope_dim], rotated.to(x.dtype)), dim=-1)
