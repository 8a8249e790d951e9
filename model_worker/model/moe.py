"""DeepSeekMoE FFN: one shared expert plus top-k of many routed experts.

Router scores are sqrt(softplus(logits)); selection adds the per-expert balancing bias, mixing weights use the
unbiased scores of the chosen experts, normalized and scaled by route_scale. The first n_hash_layers pick experts by
token id (tid2eid) instead. SwiGLU clamps up to [-limit, limit] and gate to <= limit, shared expert included.

Expert parallel (within tensor parallel): each rank holds its share of the routed experts and runs only the slots
routed to them; their partial outputs are added over ranks. The shared expert is replicated (each rank adds it after
the sum, so it counts once).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import kernels
from model_worker.config import ModelConfig
from model_worker.model.layers import Linear, frozen_param
from model_worker.numerics import Numerics
from model_worker.tensor_parallel import SINGLE, TensorParallel


class Gate(nn.Module):
    def __init__(self, config: ModelConfig, hashed: bool) -> None:
        super().__init__()
        self.config, self.hashed = config, hashed
        self.weight = frozen_param(config.n_routed_experts, config.dim, dtype=torch.bfloat16)
        if hashed:
            self.tid2eid = frozen_param(config.vocab_size, config.n_activated_experts, dtype=torch.int64)
        else:
            self.bias = frozen_param(config.n_routed_experts)
        # Training only (training/routing.py): anticipatory routing selects the experts with these older router
        # weights (the mixing weights stay the current router's, so it still learns), and `record` receives each
        # pass's router input and choices for load balancing.
        self.selection_weight: torch.Tensor | None = None
        self.record: Callable[[torch.Tensor, torch.Tensor], None] | None = None

    def forward(self, x: torch.Tensor, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [T, dim] -> (expert ids [T, k] int64, weights [T, k] float32)."""
        c = self.config
        if self.hashed:
            ids, weights = kernels.moe_gate(x, self.weight, None, self.tid2eid, token_ids, c.score_func,
                                            c.n_activated_experts, c.route_scale)
        elif self.selection_weight is None:
            ids, weights = kernels.moe_gate(x, self.weight, self.bias, None, token_ids, c.score_func,
                                            c.n_activated_experts, c.route_scale)
        else:  # chosen by the older router; weighted by the current one (the chosen ids as a per-token table)
            chosen, _ = kernels.moe_gate(x, self.selection_weight, self.bias, None, token_ids, c.score_func,
                                         c.n_activated_experts, c.route_scale)
            ids, weights = kernels.moe_gate(x, self.weight, None, chosen, torch.arange(x.shape[0], device=x.device),
                                            c.score_func, c.n_activated_experts, c.route_scale)
        if self.record is not None:
            self.record(x, ids)
        return ids, weights


class Experts(nn.Module):
    """All routed experts stacked: w13 = [w1 rows; w3 rows] per expert, w2 separately; packed FP4 or dense."""

    def __init__(self, config: ModelConfig, quantized: bool, tp: TensorParallel = SINGLE) -> None:
        super().__init__()
        first, last = tp.split(config.n_routed_experts, "n_routed_experts")
        self.first, self.tp = first, tp
        e, inter, dim = last - first, config.moe_inter_dim, config.dim
        fp4 = quantized and config.expert_dtype == "fp4"
        self.w13 = frozen_param(e, 2 * inter, dim // 2 if fp4 else dim, dtype=torch.uint8 if fp4 else torch.bfloat16)
        self.w2 = frozen_param(e, dim, inter // 2 if fp4 else inter, dtype=torch.uint8 if fp4 else torch.bfloat16)
        self.w13_scale = frozen_param(e, 2 * inter, dim // 32, dtype=torch.uint8) if fp4 else None
        self.w2_scale = frozen_param(e, dim, inter // 32, dtype=torch.uint8) if fp4 else None

    def forward(self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, limit: float,
                numerics: Numerics) -> torch.Tensor:
        """[T, dim] float32: this rank's experts' share of the routed output."""
        if self.tp.size == 1:
            return kernels.fp4_expert_ffn(x, ids, weights, self.w13, self.w13_scale, self.w2, self.w2_scale, limit,
                                          numerics.quantize)
        local = ids - self.first
        token, slot = ((local >= 0) & (local < self.w13.shape[0])).nonzero(as_tuple=True)
        out = kernels.fp4_expert_ffn(x[token], local[token, slot, None], weights[token, slot, None], self.w13,
                                     self.w13_scale, self.w2, self.w2_scale, limit, numerics.quantize)
        return torch.zeros(x.shape[0], out.shape[1], dtype=out.dtype, device=out.device).index_add_(0, token, out)


class SharedExpert(nn.Module):
    def __init__(self, config: ModelConfig, quantized: bool) -> None:
        super().__init__()
        self.limit = config.swiglu_limit
        self.w1 = Linear(config.dim, config.moe_inter_dim, role="fp8", quantized=quantized)
        self.w3 = Linear(config.dim, config.moe_inter_dim, role="fp8", quantized=quantized)
        self.w2 = Linear(config.moe_inter_dim, config.dim, role="fp8", quantized=quantized)

    def forward(self, x: torch.Tensor, numerics: Numerics) -> torch.Tensor:
        w1, w3, w2 = self.w1, self.w3, self.w2  # each nn.Module attribute lookup costs ~1 us at decode
        if w1.scale is not None:  # FP8 weights: the fused op (the three Linears are "fp8" roles)
            return kernels.fp8_swiglu_ffn(x, w1.weight, w1.scale, w3.weight, w3.scale, w2.weight, w2.scale,
                                          self.limit, numerics.quantize, numerics.act_dtype)
        gate, up = w1(x, numerics).float(), w3(x, numerics).float()
        if self.limit > 0:
            gate, up = gate.clamp(max=self.limit), up.clamp(-self.limit, self.limit)
        return w2((F.silu(gate) * up).to(numerics.act_dtype), numerics)


class MoE(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int, quantized: bool, tp: TensorParallel = SINGLE) -> None:
        super().__init__()
        self.limit, self.tp = config.swiglu_limit, tp
        self.gate = Gate(config, hashed=layer_id < config.n_hash_layers)
        self.experts = Experts(config, quantized, tp)
        self.shared_experts = SharedExpert(config, quantized)

    def forward(self, x: torch.Tensor, token_ids: torch.Tensor, numerics: Numerics) -> torch.Tensor:
        """x [T, dim] -> [T, dim] in the activation dtype."""
        ids, weights = self.gate(x, token_ids)
        routed = self.experts(x, ids, weights, self.limit, numerics)
        # float32 + bf16 promotes to float32, the same sum as converting the shared output first, one op fewer
        return (self.tp.all_reduce(routed) + self.shared_experts(x, numerics)).to(numerics.act_dtype)
