"""Numerics modes: `reference` (fp32, no quantization simulation; parity with transformers) and `official` (bf16
activations, FP8 activation quantization before FP8/FP4 GEMMs, FP8 KV, FP4 + Hadamard index keys, bf16 index scores:
what the official runtime computes and stores)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Numerics:
    name: str
    act_dtype: torch.dtype
    quantize: bool

    @property
    def index_score_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.quantize else torch.float32


REFERENCE = Numerics("reference", torch.float32, quantize=False)
OFFICIAL = Numerics("official", torch.bfloat16, quantize=True)
NUMERICS = {n.name: n for n in (REFERENCE, OFFICIAL)}


def get_numerics(name: str) -> Numerics:
    if name not in NUMERICS:
        raise ValueError(f"unknown numerics {name!r}; choose one of {sorted(NUMERICS)}")
    return NUMERICS[name]
