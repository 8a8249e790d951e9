"""Linear over a dense bf16 weight with bf16 inputs and outputs (float32 accumulation): the output head."""

from __future__ import annotations

import torch


def bf16_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x [T, K] (any float dtype, rounded to bf16) @ weight [N, K] bf16 ^T -> [T, N] float32 holding bf16 values."""
    return torch.nn.functional.linear(x.to(torch.bfloat16), weight).float()
