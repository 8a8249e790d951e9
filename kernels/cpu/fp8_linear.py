"""fp8_linear for decode-sized batches on CPU: the C kernel in fp8_linear.c, else the torch twin."""

from __future__ import annotations

import torch

from kernels.cpu.bf16_linear import MAX_TOKENS as DENSE_MAX_TOKENS
from kernels.cpu.bf16_linear import dense_gemv
from kernels.cpu.build import check, cpu_activation, library
from kernels.ref import fp8_linear as ref

# Above this many tokens the twin's dequantize-then-GEMM wins: it decodes each weight once for all tokens and the
# GEMM is blocked for cache reuse.
MAX_TOKENS = 16


def fp8_linear(
    x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None, quantize_input: bool, out_dtype: torch.dtype,
    groups: int = 1,
) -> torch.Tensor:
    """Same contract as kernels.ref.fp8_linear.fp8_linear."""
    lib = library()
    if (lib is not None and scale is None and groups == 1 and weight.dtype == torch.bfloat16 and x.dim() == 2
            and cpu_activation(x) and 0 < x.shape[0] <= DENSE_MAX_TOKENS and x.shape[1] % 32 == 0
            and weight.is_contiguous() and not quantize_input):
        return dense_gemv(lib, x.float(), weight, round_output=False).to(out_dtype)
    if (lib is None or scale is None or weight.dtype != torch.float8_e4m3fn or not cpu_activation(x)
            or x.dim() != 2 or not 0 < x.shape[0] <= MAX_TOKENS or weight.shape[1] % 8
            or out_dtype not in (torch.float32, torch.bfloat16) or not weight.is_contiguous()
            or not scale.is_contiguous()):
        return ref.fp8_linear(x, weight, scale, quantize_input, out_dtype, groups)
    x = x.contiguous()
    m, (n, k) = x.shape[0], weight.shape
    out = torch.empty(m, n, dtype=out_dtype)
    check(lib.fp8_linear(x.data_ptr(), x.dtype == torch.bfloat16, m, k, weight.data_ptr(), scale.data_ptr(), n, groups,
                         quantize_input, out.data_ptr(), out_dtype == torch.bfloat16), "fp8_linear")
    return out

