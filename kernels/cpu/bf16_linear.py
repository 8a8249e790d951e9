"""bf16_linear for decode-sized batches on CPU: the C kernel in bf16_linear.c, rows split across cores, else the
torch twin."""

from __future__ import annotations

import torch

from kernels.cpu.build import library
from kernels.cpu.parallel import run_parts, split
from kernels.ref import bf16_linear as ref

# Above this many tokens the twin's blocked GEMM wins.
MAX_TOKENS = 16
# Rows per thread below which another thread costs more than it saves (a 256-wide row is 512 B).
ROWS_PER_THREAD = 16384


def bf16_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Same contract as kernels.ref.bf16_linear.bf16_linear."""
    lib = library()
    if (lib is None or weight.dtype != torch.bfloat16 or x.device.type != "cpu" or x.dim() != 2
            or not 0 < x.shape[0] <= MAX_TOKENS or x.shape[1] % 32 or not weight.is_contiguous()):
        return ref.bf16_linear(x, weight)
    return dense_gemv(lib, x.to(torch.bfloat16).float(), weight, round_output=True)


def dense_gemv(lib, x: torch.Tensor, weight: torch.Tensor, round_output: bool) -> torch.Tensor:
    """x [m, k] float32 @ weight [n, k] bf16 ^T -> [m, n] float32 (bf16 values when round_output)."""
    x = x.contiguous()
    (m, k), n = x.shape, weight.shape[0]
    out = torch.empty(m, n, dtype=torch.float32)
    run_parts(split(n, ROWS_PER_THREAD), lambda _, first, last: lib.bf16_linear(
        x.data_ptr(), m, k, weight.data_ptr(), n, first, last, round_output, out.data_ptr()))
    return out
