"""Basic layers: a linear over any stored weight format, and RMSNorm (kernels.rms_norm, which also serves the query
heads' unweighted norm).

A `Linear`'s role decides its math (official numerics): "fp8" linears quantize their input to FP8 before the GEMM;
"bf16" linears do not; "fp32" linears compute in float32 on float32 inputs (the compressors' projections, which
`kernels.compressor_project` runs as a pair); "head" is the output projection.
How the weight is stored (FP8 + block scales, or dense) is whatever the checkpoint gave.
"""

from __future__ import annotations

import torch
from torch import nn

import kernels
from model_worker.numerics import Numerics
from model_worker.tensor_parallel import SINGLE, TensorParallel


def _frozen(tensor: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(tensor, requires_grad=False)


class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, role: str = "fp8", quantized: bool = False) -> None:
        super().__init__()
        assert role in ("fp8", "bf16", "fp32", "head"), role
        self.in_features, self.out_features, self.role = in_features, out_features, role
        dtype = torch.float8_e4m3fn if quantized else torch.bfloat16
        self.weight = _frozen(torch.empty(out_features, in_features, dtype=dtype, device="meta"))
        if quantized:
            blocks = (-(-out_features // 128), -(-in_features // 128))
            self.scale = _frozen(torch.empty(blocks, dtype=torch.uint8, device="meta"))
        else:
            self.register_parameter("scale", None)

    def forward(self, x: torch.Tensor, numerics: Numerics) -> torch.Tensor:
        if self.role == "head" and numerics.quantize and self.weight.dtype == torch.bfloat16:
            # NOTE: a bf16 GEMM (fp32 accumulation, bf16-rounded logits): converting the vocab-sized head to float32
            # on every step costs ~15x the GEMM on CPU. GPU kernels compute these logits in float32.
            return kernels.bf16_linear(x, self.weight)
        if self.role in ("fp32", "head"):
            return kernels.fp8_linear(x.float(), self.weight, self.scale, False, torch.float32)
        quantize = numerics.quantize and self.role == "fp8"
        return kernels.fp8_linear(x, self.weight, self.scale, quantize, numerics.act_dtype)


class RMSNorm(nn.Module):
    """Weighted RMSNorm computed in float32, returned in the input dtype."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = _frozen(torch.empty(dim, dtype=torch.bfloat16, device="meta"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.rms_norm(x, self.weight, self.eps)


def frozen_param(*shape: int, dtype: torch.dtype = torch.float32) -> nn.Parameter:
    """An inference-only parameter allocated on the meta device; the loader assigns the real tensor."""
    return _frozen(torch.empty(*shape, dtype=dtype, device="meta"))


class Embedding(nn.Module):
    """Tensor parallel: each rank holds a slice of the vocabulary; a token's row comes from the rank holding it."""

    def __init__(self, vocab_size: int, dim: int, tp: TensorParallel = SINGLE) -> None:
        super().__init__()
        self.first, last = tp.split(vocab_size, "vocab_size")
        self.tp = tp
        self.weight = _frozen(torch.empty(last - self.first, dim, dtype=torch.bfloat16, device="meta"))

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        if self.tp.size == 1:
            return self.weight[token_ids]
        local = token_ids - self.first
        here = (local >= 0) & (local < self.weight.shape[0])
        rows = self.weight[local.clamp(0, self.weight.shape[0] - 1)] * here[:, None]
        return self.tp.all_reduce(rows)
