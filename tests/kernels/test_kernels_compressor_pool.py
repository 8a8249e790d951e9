"""kernels.ref.compressor_pool: per-channel softmax over a group's slots, weighted sum of the slot features."""

from __future__ import annotations

import math

import pytest
import torch

from kernels import compressor_pool


def _naive(kv: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    g, s, c = kv.shape
    out = torch.zeros(g, c, dtype=torch.float64)
    for gi in range(g):
        for ch in range(c):
            col = [float(score[gi, i, ch]) for i in range(s)]
            peak = max(col)
            w = [0.0 if v == -math.inf else math.exp(v - peak) for v in col]
            out[gi, ch] = sum(w[i] * float(kv[gi, i, ch]) for i in range(s)) / sum(w)
    return out


@pytest.mark.parametrize(("g", "s", "c"), [(3, 4, 5), (2, 8, 16), (1, 128, 3), (1, 1, 4)])
def test_matches_per_channel_softmax_loop(g: int, s: int, c: int) -> None:
    kv, score = torch.randn(g, s, c), torch.randn(g, s, c) * 3
    got = compressor_pool(kv, score)
    assert got.shape == (g, c) and got.dtype == torch.float32
    assert torch.allclose(got.double(), _naive(kv, score), atol=1e-5)


def test_minus_inf_slots_weigh_zero() -> None:
    kv, score = torch.randn(2, 8, 6), torch.randn(2, 8, 6)
    score[0, :4] = -math.inf  # CSA group 0: the previous-group slots are absent
    score[1, 2, 3] = -math.inf
    kv[0, :4] = 1e6  # would dominate if it leaked in
    got = compressor_pool(kv, score)
    assert torch.isfinite(got).all()
    assert torch.allclose(got.double(), _naive(kv, score), atol=1e-5)
    assert torch.allclose(got[0], compressor_pool(kv[:1, 4:], score[:1, 4:])[0], atol=1e-6)


def test_hand_values() -> None:
    # channel 0: scores (0, ln 3) -> weights (1/4, 3/4); channel 1: equal scores -> mean
    kv = torch.tensor([[[4.0, 2.0], [8.0, 6.0]]])
    score = torch.tensor([[[0.0, 5.0], [math.log(3.0), 5.0]]])
    assert torch.allclose(compressor_pool(kv, score), torch.tensor([[7.0, 4.0]]))
