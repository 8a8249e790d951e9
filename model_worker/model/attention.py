"""Attention for all three layer kinds: window-only, CSA (compressed, top-k by the indexer) and HCA (compressed, dense).

Low-rank queries (wq_a -> q_norm -> wq_b, per-head RMS norm), one shared 512-d K=V head (wkv -> kv_norm), partial RoPE,
one softmax over the query's 128-token window plus its compressed entries with a per-head sink, inverse RoPE on the
output, and a grouped low-rank output projection (wo_a per group, then wo_b).

Tensor parallel: each rank runs its share of the heads (and their output groups and sinks); the K=V head and the
compressors are replicated, so every rank keeps the same state; wo_b's partial sums are added over ranks.
"""

from __future__ import annotations

import torch
from torch import nn

import kernels
from model_worker.config import CSA, HCA, WINDOW, ModelConfig
from model_worker.model.batch import Segment
from model_worker.model.compressor import Compressor
from model_worker.model.indexer import Indexer
from model_worker.model.layers import Linear, RMSNorm, frozen_param
from model_worker.model.rope import inv_freq
from model_worker.numerics import Numerics
from model_worker.state import LayerState, StateLayout
from model_worker.tensor_parallel import SINGLE, TensorParallel


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int, quantized: bool, tp: TensorParallel = SINGLE) -> None:
        super().__init__()
        self.config, self.layer_id, self.tp = config, layer_id, tp
        self.kind = config.layer_type(layer_id)
        self.ratio = config.compress_ratios[layer_id]
        c = config
        heads = tp.split(c.n_heads, "n_heads")
        groups = tp.split(c.o_groups, "o_groups")
        self.n_local_heads, self.n_local_groups = heads[1] - heads[0], groups[1] - groups[0]
        self.wq_a = Linear(c.dim, c.q_lora_rank, role="fp8", quantized=quantized)
        self.q_norm = RMSNorm(c.q_lora_rank, c.norm_eps)
        self.wq_b = Linear(c.q_lora_rank, self.n_local_heads * c.head_dim, role="fp8", quantized=quantized)
        self.wkv = Linear(c.dim, c.head_dim, role="fp8", quantized=quantized)
        self.kv_norm = RMSNorm(c.head_dim, c.norm_eps)
        self.wo_a = Linear(c.n_heads * c.head_dim // c.o_groups, self.n_local_groups * c.o_lora_rank, role="bf16",
                           quantized=quantized)
        self.wo_b = Linear(self.n_local_groups * c.o_lora_rank, c.dim, role="fp8", quantized=quantized)
        self.attn_sink = frozen_param(self.n_local_heads)
        if self.kind != WINDOW:
            self.compressor = Compressor(c.dim, c.head_dim, self.ratio, overlap=self.kind == CSA, norm_eps=c.norm_eps)
        if self.kind == CSA:
            self.indexer = Indexer(c, quantized, tp)
        self.register_buffer("freqs", inv_freq(c, compressed=self.kind != WINDOW), persistent=False)

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor, segments: list[Segment], layout: StateLayout,
        numerics: Numerics,
    ) -> torch.Tensor:
        """x [T, dim] (normed block input) -> [T, dim]; extends each segment's state for this layer."""
        c = self.config
        qr = self.q_norm(self.wq_a(x, numerics))
        q = self.wq_b(qr, numerics).view(-1, self.n_local_heads, c.head_dim)
        q = kernels.apply_rope(kernels.rms_norm(q, None, c.norm_eps), positions, self.freqs)
        kv = kernels.apply_rope(self.kv_norm(self.wkv(x, numerics)), positions, self.freqs)
        # Every projection runs once over all tokens; only the state-dependent work runs per sequence.
        comp_features = self.compressor.project(x, positions) if self.kind != WINDOW else None
        index_inputs = self.indexer.queries(qr, x, positions, self.freqs, numerics) if self.kind == CSA else None
        stored_kv = layout.encode_kv(kv)
        parts = [self._attend(q[seg.rows], stored_kv[seg.rows],
                              None if comp_features is None else comp_features[seg.rows],
                              None if index_inputs is None else tuple(t[seg.rows] for t in index_inputs),
                              seg, layout, numerics) for seg in segments]
        out = parts[0] if len(parts) == 1 else torch.cat(parts)
        o = kernels.apply_rope(out.to(numerics.act_dtype), positions, self.freqs, inverse=True)
        return self.tp.all_reduce(self.wo_b(self._grouped_wo_a(o, numerics), numerics))

    def _attend(
        self, q: torch.Tensor, stored_kv: torch.Tensor, comp_features: torch.Tensor | None,
        index_inputs: tuple[torch.Tensor, ...] | None, seg: Segment, layout: StateLayout, numerics: Numerics,
    ) -> torch.Tensor:
        """One sequence's chunk: q [n, H, D], its new window rows in stored form and its rows of the compressor /
        indexer inputs -> [n, H, D] float32. Attention reads the window log and the pages where they are, in their
        stored form."""
        window, start, state = self.config.window_size, seg.start_position, seg.state.layers[self.layer_id]
        # The MTP layer's window may start later (it catches up over its last window only).
        first = max(0, start - window + 1, state.window.start)
        state.window.append(stored_kv)

        def window_index() -> torch.Tensor:
            """Query i reads positions i-window+1 .. i, rows counted from `first`; rows before it do not exist."""
            offsets = torch.arange(window, device=q.device)
            return ((seg.positions - (window - 1) - first)[:, None] + offsets).clamp_(min=-1)

        comp_kv, comp_idx = self._compressed(q, comp_features, index_inputs, seg, state, layout, numerics)
        return kernels.sparse_attention(q, state.window.rows(first, start + seg.length),
                                        seg.shared(("window", first), window_index), comp_kv, comp_idx,
                                        self.attn_sink, self.config.head_dim**-0.5, self.config.rope_head_dim)

    def _compressed(
        self, q: torch.Tensor, comp_features: torch.Tensor | None, index_inputs: tuple[torch.Tensor, ...] | None,
        seg: Segment, state: LayerState, layout: StateLayout, numerics: Numerics,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Extend the compressed entries; return the storage they lie in [M, *] and the rows this chunk reads [n, C]
        (q [n, H, D]: the chunk's queries, for the sparse warm-up)."""
        n = seg.length
        if self.kind == WINDOW:
            return state.window.buffer[:0], seg.shared(("no entries",), lambda: seg.positions.new_zeros(n, 0))
        entries = self.compressor(comp_features, seg.start_position, state.comp, self.freqs, numerics)
        if entries.shape[0]:
            state.entries.append(layout.encode_kv(entries))
        count = state.entries.count

        def every_entry() -> torch.Tensor:
            ids = torch.arange(count, device=seg.positions.device)[None, :].expand(n, -1)
            return torch.where(ids < seg.visible_entries(self.ratio)[:, None], ids, torch.full_like(ids, -1))

        if self.kind == HCA or self.indexer.distill is not None:
            ids = seg.shared(("every entry", self.ratio, count), every_entry)
        else:
            ids = self.indexer.select(*index_inputs, seg, state, layout, self.freqs, numerics)
        # Entries are read where they lie in the layer's page pool: entry ids become storage rows.
        storage, rows = state.entries.storage_rows()
        if self.kind == CSA and self.indexer.distill is not None:  # the sparse warm-up (training)
            scores = self.indexer.dense_scores(*index_inputs, seg, state, layout, self.freqs, numerics)
            self.indexer.distill(q, layout.decode_kv(storage if rows.numel() == 0 else storage[rows]), scores)
        if rows.numel() == 0:
            return storage, ids
        return storage, torch.where(ids >= 0, rows[ids.clamp(min=0)], -1)

    def _grouped_wo_a(self, o: torch.Tensor, numerics: Numerics) -> torch.Tensor:
        """o [T, H, D] -> [T, groups * o_lora_rank]: each group of heads through its own slice of wo_a."""
        return kernels.fp8_linear(o.flatten(1), self.wo_a.weight, self.wo_a.scale, False, numerics.act_dtype,
                                  groups=self.n_local_groups)
