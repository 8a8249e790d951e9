"""One transformer block: mHC around attention, then mHC around the MoE FFN (official parameter names)."""

from __future__ import annotations

import torch
from torch import nn

import kernels
from model_worker.config import ModelConfig
from model_worker.model.attention import Attention
from model_worker.model.batch import Segment
from model_worker.model.layers import RMSNorm
from model_worker.model.mhc import add_hc_params
from model_worker.model.moe import MoE
from model_worker.numerics import Numerics
from model_worker.state import StateLayout
from model_worker.tensor_parallel import SINGLE, TensorParallel


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int, quantized: bool, tp: TensorParallel = SINGLE) -> None:
        super().__init__()
        self.config = config
        n = config.hc_mult
        mix, flat = (2 + n) * n, n * config.dim
        add_hc_params(self, "hc_attn", mix, flat, 3)
        add_hc_params(self, "hc_ffn", mix, flat, 3)
        self.attn_norm = RMSNorm(config.dim, config.norm_eps)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.attn = Attention(config, layer_id, quantized, tp)
        self.ffn = MoE(config, layer_id, quantized, tp)

    def forward(
        self, streams: torch.Tensor, token_ids: torch.Tensor, positions: torch.Tensor, segments: list[Segment],
        layout: StateLayout, numerics: Numerics,
    ) -> torch.Tensor:
        """streams [T, hc_mult, dim] -> [T, hc_mult, dim]."""
        c = self.config
        x, post, comb = kernels.hc_pre(streams, self.hc_attn_fn, self.hc_attn_base, self.hc_attn_scale, c.norm_eps,
                                       c.hc_eps, c.hc_sinkhorn_iters)
        y = self.attn(self.attn_norm(x), positions, segments, layout, numerics)
        streams = kernels.hc_post(y, streams, post, comb)
        x, post, comb = kernels.hc_pre(streams, self.hc_ffn_fn, self.hc_ffn_base, self.hc_ffn_scale, c.norm_eps,
                                       c.hc_eps, c.hc_sinkhorn_iters)
        y = self.ffn(self.ffn_norm(x), token_ids, numerics)
        return kernels.hc_post(y, streams, post, comb)
