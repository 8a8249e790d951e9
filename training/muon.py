"""Muon with DeepSeek-V4's hybrid Newton-Schulz orthogonalization, and the optimizer split of the recipe.

Each Muon step: momentum (Nesterov, 0.95), then the update normalized by its Frobenius norm and orthogonalized by ten
Newton-Schulz iterations on its wide orientation (X <- a X + (b A + c A^2) X with A = X X^T): eight with
(3.4445, -4.7750, 2.0315), which push every singular value quickly towards 1, and two with (2, -1.5, 0.5), which
settle them at 1; then rescaled to an RMS of 0.18, so that Muon and AdamW share one learning rate, with decoupled
weight decay. AdamW takes the embedding, the output head, every RMSNorm and mHC's static biases and gating factors.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

FAST = (3.4445, -4.7750, 2.0315)
SETTLE = (2.0, -1.5, 0.5)
SCHEDULE = (FAST,) * 8 + (SETTLE,) * 2
UPDATE_RMS = 0.18


def orthogonalize(update: torch.Tensor, schedule: tuple[tuple[float, float, float], ...] = SCHEDULE,
                  eps: float = 1e-7, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The hybrid Newton-Schulz iteration on matrices [..., m, n] (each matrix on its own), computed in `dtype`:
    their polar factors U V^T, approximately, in float32."""
    x = update.float()
    tall = x.shape[-2] > x.shape[-1]
    if tall:
        x = x.mT
    x = (x / (torch.linalg.matrix_norm(x, keepdim=True) + eps)).to(dtype)
    for a, b, c in schedule:
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    x = x.float()
    return x.mT if tall else x


class Muon(torch.optim.Optimizer):
    """Muon for matrices; a 3-D parameter (the routed experts' [experts, out, in]) is one matrix per expert. The
    Newton-Schulz products run in bf16 (as Muon's authors run them) where the CPU has bf16 dot products (AVX512-BF16,
    AMX: ~4x the float32 speed; an update's direction needs no more precision), in float32 elsewhere (AVX2 emulates
    bf16 at ~1/8 of the float32 speed)."""

    def __init__(self, params: Iterable[nn.Parameter], lr: float = 1e-3, momentum: float = 0.95,
                 weight_decay: float = 0.1, update_rms: float = UPDATE_RMS, ns_dtype: torch.dtype | None = None
                 ) -> None:
        ns_dtype = ns_dtype or (torch.bfloat16 if native_bf16_matmul() else torch.float32)
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "update_rms": update_rms, "ns_dtype": ns_dtype})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else torch.enable_grad()(closure)()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                buffer = state.get("momentum")
                if buffer is None:
                    buffer = state["momentum"] = torch.zeros_like(param, dtype=torch.float32)
                grad = param.grad.float()
                buffer.mul_(group["momentum"]).add_(grad)
                nesterov = grad.add(buffer, alpha=group["momentum"])
                update = orthogonalize(nesterov, dtype=group["ns_dtype"])
                # An orthogonal [m, n] matrix has RMS 1/sqrt(max(m, n)): rescale to the target RMS.
                update = update * (group["update_rms"] * max(nesterov.shape[-2:]) ** 0.5)
                param.mul_(1 - group["lr"] * group["weight_decay"])
                param.add_(update.view_as(param).to(param.dtype), alpha=-group["lr"])
        return loss


def native_bf16_matmul() -> bool:
    """Whether this machine multiplies bf16 matrices in hardware (a GPU, or a CPU with AVX512-BF16 or AMX)."""
    if torch.cuda.is_available():
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def adamw_parameter(name: str, param: nn.Parameter) -> bool:
    """Whether the recipe gives `name` to AdamW: the embedding and the output head, and every vector (RMSNorm
    weights, mHC's static biases and gating factors, attention sinks), and the compressors' positional biases."""
    return param.dim() < 2 or name in ("embed.weight", "head.weight") or name.endswith(".ape")


def optimizers(model: nn.Module, lr: float, weight_decay: float = 0.1, betas: tuple[float, float] = (0.9, 0.95)
               ) -> tuple[Muon, torch.optim.AdamW]:
    """The recipe's split of the model's float parameters (made trainable here; the hash-routing tables are
    integers and stay fixed, the routers' selection biases move by load, not by gradient): (Muon, AdamW), one
    learning-rate scale for both."""
    muon, adamw = [], []
    for name, param in model.named_parameters():
        if param.is_floating_point() and not name.endswith("gate.bias"):  # selection biases: training/routing.py
            param.requires_grad_(True)
            (adamw if adamw_parameter(name, param) else muon).append(param)
    return (Muon(muon, lr=lr, weight_decay=weight_decay),
            torch.optim.AdamW(adamw, lr=lr, betas=betas, weight_decay=weight_decay, fused=True))
