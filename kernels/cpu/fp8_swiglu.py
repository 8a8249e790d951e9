"""fp8_swiglu_ffn for decode-sized batches on CPU: the C kernel in fp8_swiglu.c, else the torch twin."""

from __future__ import annotations

import torch

from kernels.cpu.build import check, cpu_activation, library
from kernels.cpu.fp8_linear import MAX_TOKENS
from kernels.ref import fp8_swiglu as ref


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
) -> torch.Tensor:
    """Same contract as kernels.ref.fp8_swiglu.fp8_swiglu_ffn; FP8 weights only (dense ones take the twin)."""
    lib = library()
    if lib is None or not _covered(x, w1, w1_scale, w3, w3_scale, w2, w2_scale, out_dtype):
        return ref.fp8_swiglu_ffn(x, w1, w1_scale, w3, w3_scale, w2, w2_scale, swiglu_limit, quantize_input,
                                  out_dtype)
    (m, d), inter = x.shape, w1.shape[0]
    x = x.contiguous()
    out = torch.empty(m, d, dtype=out_dtype)
    check(lib.fp8_swiglu_ffn(x.data_ptr(), x.dtype == torch.bfloat16, m, d, w1.data_ptr(), w1_scale.data_ptr(),
                             w3.data_ptr(), w3_scale.data_ptr(), inter, w2.data_ptr(), w2_scale.data_ptr(),
                             swiglu_limit, quantize_input, out.data_ptr(), out_dtype == torch.bfloat16),
          "fp8_swiglu_ffn")
    return out


def _covered(x: torch.Tensor, w1: torch.Tensor, w1_scale: torch.Tensor | None, w3: torch.Tensor,
             w3_scale: torch.Tensor | None, w2: torch.Tensor, w2_scale: torch.Tensor | None,
             out_dtype: torch.dtype) -> bool:
    """Whether the C kernel takes these inputs: decode-sized CPU activations and three contiguous FP8 weights."""
    if (w1_scale is None or w3_scale is None or w2_scale is None or not cpu_activation(x) or x.dim() != 2
            or out_dtype not in (torch.float32, torch.bfloat16)):
        return False
    (m, d), (inter, k) = x.shape, w1.shape
    return (0 < m <= MAX_TOKENS and k == d and not d % 8 and not inter % 8 and w3.shape == w1.shape
            and w2.shape == (d, inter) and w1.dtype == w3.dtype == w2.dtype == torch.float8_e4m3fn
            and all(t.is_contiguous() for t in (w1, w1_scale, w3, w3_scale, w2, w2_scale)))
