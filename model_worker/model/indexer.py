"""Lightning Indexer (CSA layers): its own compressor makes one small key per 4 tokens; each query scores the visible
keys with Σ_h w_h · ReLU(q_h · k) and keeps the top k for sparse attention. Tensor parallel: each rank scores with
its share of the heads and the partial scores are added over ranks before the top k.

Official numerics rotate queries and keys with a Hadamard transform and round both through FP4 (the QK path the model
was trained with); keys are stored in that FP4 form. The rotation is orthogonal, so reference numerics skip it.

The sparse warm-up (training/) sets `distill`: the layer then attends every visible entry and hands the indexer's
scores of all of them, with the attention's queries and entries, to `distill`, which trains the indexer to match the
attention; its inputs are detached, so that loss reaches the indexer alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

import kernels
from kernels.ref.indexer_topk import index_scores
from model_worker.config import ModelConfig
from model_worker.model.batch import Segment
from model_worker.model.compressor import Compressor
from model_worker.model.layers import Linear
from model_worker.numerics import Numerics
from model_worker.state import LayerState, StateLayout
from model_worker.tensor_parallel import SINGLE, TensorParallel


class Indexer(nn.Module):
    def __init__(self, config: ModelConfig, quantized: bool, tp: TensorParallel = SINGLE) -> None:
        super().__init__()
        self.n_heads, self.head_dim, self.topk = config.index_n_heads, config.index_head_dim, config.index_topk
        self.ratio, self.tp = config.csa_ratio, tp
        heads = tp.split(self.n_heads, "index_n_heads")
        self.n_local_heads = heads[1] - heads[0]
        self.wq_b = Linear(config.q_lora_rank, self.n_local_heads * self.head_dim, role="fp8", quantized=quantized)
        self.weights_proj = Linear(config.dim, self.n_local_heads, role="bf16")
        self.compressor = Compressor(config.dim, self.head_dim, self.ratio, overlap=True, norm_eps=config.norm_eps)
        self.distill: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None
        self.fp4_qk = False  # quantization-aware training (training/qat.py): reference numerics, official QK rounding

    def queries(self, qr: torch.Tensor, x: torch.Tensor, positions: torch.Tensor, freqs: torch.Tensor,
                numerics: Numerics) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched over all tokens: queries [T, H, c], head weights [T, H] float32 (scales folded in) and the key
        compressor's features [T, 4c]."""
        if self.distill is not None:
            qr, x = qr.detach(), x.detach()
        q = self.wq_b(qr, numerics).view(-1, self.n_local_heads, self.head_dim)
        q = kernels.apply_rope(q, positions, freqs)
        if numerics.quantize:
            q = kernels.fp4_round_trip(kernels.hadamard(q))
        elif self.fp4_qk:
            q = _straight_through_fp4(kernels.hadamard(q))
        weights = self.weights_proj(x, numerics).float() * (self.head_dim**-0.5 * self.n_heads**-0.5)
        return q, weights, self.compressor.project(x, positions)

    def select(
        self, q: torch.Tensor, weights: torch.Tensor, features: torch.Tensor, seg: Segment, state: LayerState,
        layout: StateLayout, freqs: torch.Tensor, numerics: Numerics,
    ) -> torch.Tensor:
        """One sequence's chunk (its rows of `queries`): extend its index keys, then return the top-k entry ids per
        query [n, k] (-1 = none)."""
        self._extend_keys(features, seg, state, layout, freqs, numerics)
        visible = seg.visible_entries(self.ratio)
        keys, rows = state.index_keys.storage_rows()  # keys are read where they lie in the layer's page pool
        if self.tp.size == 1:
            return kernels.indexer_topk(q, weights, keys, visible, self.topk, numerics.index_score_dtype, rows)
        return kernels.indexer_topk_sharded(q, weights, keys, visible, self.topk, numerics.index_score_dtype,
                                            self.tp.all_reduce, rows)

    def dense_scores(
        self, q: torch.Tensor, weights: torch.Tensor, features: torch.Tensor, seg: Segment, state: LayerState,
        layout: StateLayout, freqs: torch.Tensor, numerics: Numerics,
    ) -> torch.Tensor:
        """The sparse warm-up's `select`: extend the index keys the same way, then score every entry for each query
        -> [n, N] float32, -inf where not visible; differentiable (the top-k kernels are not)."""
        self._extend_keys(features, seg, state, layout, freqs, numerics)
        keys, rows = state.index_keys.storage_rows()
        keys = layout.decode_index_keys(keys if rows.numel() == 0 else keys[rows])
        scores = index_scores(q, weights, keys)
        hidden = torch.arange(keys.shape[0], device=q.device)[None, :] >= seg.visible_entries(self.ratio)[:, None]
        return scores.masked_fill(hidden, float("-inf"))

    def _extend_keys(self, features: torch.Tensor, seg: Segment, state: LayerState, layout: StateLayout,
                     freqs: torch.Tensor, numerics: Numerics) -> None:
        keys = self.compressor(features, seg.start_position, state.index_comp, freqs, numerics)
        if keys.shape[0] and self.fp4_qk and not numerics.quantize:
            keys = _straight_through_fp4(kernels.hadamard(keys))
        if keys.shape[0]:
            state.index_keys.append(layout.encode_index_keys(kernels.hadamard(keys) if numerics.quantize else keys))


def _straight_through_fp4(x: torch.Tensor) -> torch.Tensor:
    """The FP4 round trip forward, the identity backward."""
    return x + (kernels.fp4_round_trip(x) - x).detach()
