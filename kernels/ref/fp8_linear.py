"""Linear layer over a stored weight (FP8 e4m3 with 128x128 ue8m0 block scales, packed FP4, or dense)."""

from __future__ import annotations

import torch

from kernels.ref.act_quant import fp8_round_trip
from kernels.ref.formats import FP8_BLOCK, dequantize


def fp8_linear(
    x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None, quantize_input: bool, out_dtype: torch.dtype,
    groups: int = 1,
) -> torch.Tensor:
    """y = act_quant(x) @ dequant(weight)^T with float32 accumulation; grouped: each group's rows see its slice of x.

    Args:
        x: [T, groups * K] activations.
        weight: [N, K] float8_e4m3fn (with `scale` [ceil(N/128), ceil(K/128)] uint8), or dense float (scale None).
            The rows of group g (N / groups of them) multiply x[:, g*K : (g+1)*K].
        quantize_input: round x through FP8 e4m3 per 1x128 block of each group's slice first (official numerics).
    Returns:
        [T, N] in out_dtype.
    """
    xg = x.unflatten(-1, (groups, -1))
    if quantize_input:
        xg = fp8_round_trip(xg, FP8_BLOCK)
    w = dequantize(weight, scale)
    return torch.einsum("tgk,grk->tgr", xg.float(), w.view(groups, -1, w.shape[1])).flatten(1).to(out_dtype)
