"""What a sequence's state holds per layer kind, in which stored form, and how many bytes that is.

Page size: 64 entries for every paged stream (CSA KV and index keys: 256 tokens a page; HCA KV: 8,192 tokens a page
at m' = 128). Small pages keep the partial page (rewritten on every session commit) small; 64 entries of 584 B are
36.5 KiB, large enough for efficient object-store writes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels import decode_kv, encode_index_keys, encode_kv
from kernels.ref.kv_codec import decode_index_keys, index_key_bytes, kv_entry_bytes
from model_worker.config import CSA, HCA, ModelConfig
from model_worker.numerics import Numerics

PAGE_ENTRIES = 64


@dataclass(frozen=True)
class StateLayout:
    """Stored forms of a model's per-sequence state under one numerics."""

    config: ModelConfig
    numerics: Numerics

    @property
    def kv_width(self) -> int:
        c = self.config
        return kv_entry_bytes(c.head_dim, c.rope_head_dim) if self.numerics.quantize else c.head_dim

    @property
    def kv_dtype(self) -> torch.dtype:
        return torch.uint8 if self.numerics.quantize else torch.float32

    @property
    def index_key_width(self) -> int:
        c = self.config
        return index_key_bytes(c.index_head_dim) if self.numerics.quantize else c.index_head_dim

    def encode_kv(self, x: torch.Tensor) -> torch.Tensor:
        """[N, head_dim] -> stored rows. In official numerics this is the FP8 round trip of the nope dims."""
        return encode_kv(x, self.config.rope_head_dim) if self.numerics.quantize else x.float()

    def decode_kv(self, stored: torch.Tensor) -> torch.Tensor:
        return decode_kv(stored, self.config.head_dim, self.config.rope_head_dim) if self.numerics.quantize else stored

    def encode_index_keys(self, x: torch.Tensor) -> torch.Tensor:
        return encode_index_keys(x) if self.numerics.quantize else x.float()

    def decode_index_keys(self, stored: torch.Tensor) -> torch.Tensor:
        return decode_index_keys(stored, self.config.index_head_dim) if self.numerics.quantize else stored

    def compressor_width(self, kind: str, index: bool = False) -> int:
        """Float32 values per token row of a compressor's feature log: kv and score, 2c each for CSA's overlap."""
        c = self.config.index_head_dim if index else self.config.head_dim
        return 2 * (2 * c if kind == CSA else c)

    def ratio(self, layer_id: int) -> int:
        return self.config.compress_ratios[layer_id]

    def growth_bytes_per_token(self, kind: str) -> float:
        """Asymptotic stored bytes per token of context for one layer of this kind (pages, excluding fixed tails)."""
        kv_row = self.kv_width * torch.empty(0, dtype=self.kv_dtype).element_size()
        idx_row = self.index_key_width * torch.empty(0, dtype=self.kv_dtype).element_size()
        if kind == CSA:
            return (kv_row + idx_row) / self.config.csa_ratio
        if kind == HCA:
            hca = [r for r, k in zip(self.config.compress_ratios, self.config.layer_types) if k == HCA]
            return kv_row / hca[0]
        return 0.0
