"""SwiGLU FFN over three linears (the shared expert): w2(silu(w1 x) * w3 x) with the official clamping."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from kernels.ref.fp8_linear import fp8_linear


def fp8_swiglu_ffn(
    x: torch.Tensor,
    w1: torch.Tensor,
    w1_scale: torch.Tensor | None,
    w3: torch.Tensor,
    w3_scale: torch.Tensor | None,
    w2: torch.Tensor,
    w2_scale: torch.Tensor | None,
    swiglu_limit: float,
    quantize_input: bool,
    out_dtype: torch.dtype,
    *,
    linear: Callable[..., torch.Tensor] = fp8_linear,
) -> torch.Tensor:
    """Three fp8_linears around a float32 SwiGLU, each linear returning out_dtype (the activation dtype).

    Args:
        x: [T, D] activations.
        w1, w3: [I, D] gate and up weights, w2: [D, I]; each FP8 e4m3 with its block scale, or dense (scale None),
            as kernels.ref.fp8_linear takes them.
        swiglu_limit: when > 0, gate is clamped to <= limit and up to [-limit, limit].
        quantize_input: FP8 round trip of each linear's input (official numerics).
        linear: the implementation of fp8_linear's contract to compose (the Triton path passes its own).
    Returns:
        [T, D] in out_dtype.
    """
    gate = linear(x, w1, w1_scale, quantize_input, out_dtype).float()
    up = linear(x, w3, w3_scale, quantize_input, out_dtype).float()
    if swiglu_limit > 0:
        gate, up = gate.clamp(max=swiglu_limit), up.clamp(-swiglu_limit, swiglu_limit)
    return linear((F.silu(gate) * up).to(out_dtype), w2, w2_scale, quantize_input, out_dtype)
