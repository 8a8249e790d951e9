"""RoPE frequencies: partial interleaved RoPE on the last `rope_head_dim` dims of each vector (kernels.apply_rope).

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
