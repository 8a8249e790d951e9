"""Linear layer over a stored weight (FP8 e4m3 with 128x128 ue8m0 block scales, packed FP4, or dense)."""

from __future__ import annotations

import torch

from kernels.ref.act_quant import fp8_round_trip
from kernels.ref.formats import FP8_BLOCK, dequantize


def fp8_linear(
    x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None, quantize_input: bool, out_dtype: torch.dtype
) -> torch.Tensor:
    """y = act_quant(x) @ dequant(weight)^T with float32 accumulation.

    Args:
        x: [T, K] activations.
        weight: [N, K] float8_e4m3fn (with `scale` [ceil(N/128), ceil(K/128)] uint8), or dense float (scale None).
        quantize_input: round x through FP8 e4m3 per 1x128 block first (official numerics).
    Returns:
        [T, N] in out_dtype.
    """
    if quantize_input:
        x = fp8_round_trip(x, FP8_BLOCK)
    return (x.float() @ dequantize(weight, scale).T).to(out_dtype)
