"""Manifold-constrained hyper-connections: hc_mult residual streams mixed around every sublayer.

Per site: mixes = RMS-scaled projection of the flattened streams; pre (sigmoid + eps) collapses the streams into
the sublayer input; post (2 * sigmoid) expands its output; comb (Sinkhorn, doubly stochastic) mixes the old streams:
new_k = post_k * y + Σ_j comb[j, k] * stream_j. The math lives in kernels (hc_pre, hc_post, hc_head: hot per token).
"""

from __future__ import annotations

from torch import nn

from model_worker.model.layers import frozen_param


def add_hc_params(module: nn.Module, prefix: str, rows: int, flat: int, scales: int) -> None:
    """Register `{prefix}_fn` [rows, flat], `{prefix}_base` [rows] and `{prefix}_scale` [scales] (official names)."""
    setattr(module, f"{prefix}_fn", frozen_param(rows, flat))
    setattr(module, f"{prefix}_base", frozen_param(rows))
    setattr(module, f"{prefix}_scale", frozen_param(scales))
