"""Multi-token prediction layer: from the main model's streams at position i and the embedding of token i+1, one
window-only block predicts token i+2 (a draft for speculative decoding). Embedding and head are the main model's.

The MTP layer keeps its own window state over pairs (h_i, token_{i+1}); pair i sits at position i.
"""

from __future__ import annotations

import torch

from model_worker.config import ModelConfig
from model_worker.model.block import Block
from model_worker.model.layers import Linear, RMSNorm
from model_worker.model.mhc import add_hc_params
from model_worker.numerics import Numerics
from model_worker.tensor_parallel import SINGLE, TensorParallel


class MTPBlock(Block):
    def __init__(self, config: ModelConfig, layer_id: int, quantized: bool, tp: TensorParallel = SINGLE) -> None:
        super().__init__(config, layer_id, quantized, tp)
        n = config.hc_mult
        self.e_proj = Linear(config.dim, config.dim, role="fp8", quantized=quantized)
        self.h_proj = Linear(config.dim, config.dim, role="fp8", quantized=quantized)
        self.enorm = RMSNorm(config.dim, config.norm_eps)
        self.hnorm = RMSNorm(config.dim, config.norm_eps)
        self.norm = RMSNorm(config.dim, config.norm_eps)
        add_hc_params(self, "hc_head", n, n * config.dim, 1)

    def input_streams(self, embedded: torch.Tensor, hidden: torch.Tensor, numerics: Numerics) -> torch.Tensor:
        """embedded [P, dim] (token i+1), hidden [P, hc_mult, dim] (main streams at i) -> block input streams."""
        e = self.e_proj(self.enorm(embedded.to(numerics.act_dtype)), numerics)
        h = self.h_proj(self.hnorm(hidden.to(numerics.act_dtype)).flatten(0, 1), numerics).view(hidden.shape)
        return (e.unsqueeze(1) + h).to(numerics.act_dtype)
