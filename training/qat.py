"""Quantization-aware training in exactly the formats the engine serves, with straight-through gradients.

Weights: every weight the official layout stores in a narrower format (FP8 e4m3 with 128x128 ue8m0 block scales; the
routed experts FP4 e2m1 with a ue8m0 scale per 32; bf16 for the embedding, the head, the norms, ...) is rounded
through the checkpoint writer's own `quantize_tensor` and back. `rounded()` swaps the rounded values in for the
forward and backward, so each gradient is taken at the weights the shipped checkpoint will hold, and swaps the float
masters back for the optimizer step: the round trip's derivative is taken as 1 (the straight-through estimator). A
checkpoint exported from the masters therefore holds exactly the weights the QAT forward used.

The Lightning Indexer's QK path: queries and keys go through the Hadamard rotation and an FP4 round trip, as in the
official numerics, with the same straight-through gradient (indexer.py, `fp4_qk`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from model_worker.checkpoint.layouts import OFFICIAL, layout_config
from model_worker.checkpoint.writer import dequantize_state_dict, quantize_tensor
from model_worker.config import CSA
from model_worker.model import DeepseekV4


class QuantizationAware:
    def __init__(self, model: DeepseekV4) -> None:
        self._official = dict(DeepseekV4(layout_config(model.config, OFFICIAL), quantized=True).named_parameters())
        # Every weight the checkpoint stores in another dtype: FP8, packed FP4, and bf16 (embedding, head, norms...).
        self.quantized = {name: param for name, param in model.named_parameters()
                          if param.is_floating_point() and self._official[name].dtype != param.dtype}
        for layer in model.layers:
            if layer.attn.kind == CSA:  # the QK path too, from now on
                layer.attn.indexer.fp4_qk = True

    @torch.no_grad()
    def round_trip(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        """The value the shipped checkpoint holds for `weight`, in its dtype."""
        stored = quantize_tensor(name, weight, self._official)
        return dequantize_state_dict(stored)[name].to(weight.dtype)

    @contextmanager
    def rounded(self) -> Iterator[None]:
        """Inside: the quantized weights hold their round trips (run forward and backward here)."""
        masters = {}
        try:
            for name, param in self.quantized.items():
                masters[name] = param.data
                param.data = self.round_trip(name, param.data)
            yield
        finally:
            for name, master in masters.items():
                self.quantized[name].data = master

