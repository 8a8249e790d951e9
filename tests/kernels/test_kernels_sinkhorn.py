"""kernels.ref.sinkhorn: mHC's Sinkhorn projection vs a naive Python loop in the documented order."""

from __future__ import annotations

import math

import pytest
import torch

from kernels import sinkhorn


def _naive(logits: list[list[float]], iters: int, eps: float) -> list[list[float]]:
    """Row softmax + eps, column normalize; then iters-1 times: row normalize, column normalize (Python floats)."""
    n = len(logits)
    m = [[0.0] * n for _ in range(n)]
    for i in range(n):
        peak = max(logits[i])
        exps = [math.exp(v - peak) for v in logits[i]]
        m[i] = [e / sum(exps) + eps for e in exps]

    def col_norm() -> None:
        for j in range(n):
            total = sum(m[i][j] for i in range(n)) + eps
            for i in range(n):
                m[i][j] /= total

    col_norm()
    for _ in range(iters - 1):
        for i in range(n):
            total = sum(m[i]) + eps
            m[i] = [v / total for v in m[i]]
        col_norm()
    return m


@pytest.mark.parametrize(("n", "iters"), [(4, 20), (4, 1), (4, 2), (3, 5), (1, 20), (6, 20)])
def test_matches_naive_loop(n: int, iters: int) -> None:
    logits = torch.randn(3, n, n) * 3
    got = sinkhorn(logits, iters, 1e-6)
    assert got.shape == (3, n, n) and got.dtype == torch.float32
    for b in range(3):
        expected = torch.tensor(_naive(logits[b].tolist(), iters, 1e-6), dtype=torch.float64)
        assert torch.allclose(got[b].double(), expected, rtol=1e-5, atol=1e-7)


def test_larger_eps_follows_order() -> None:
    logits = torch.randn(2, 5, 4, 4)
    got = sinkhorn(logits, 7, 0.1)
    assert got.shape == (2, 5, 4, 4)
    for a in range(2):
        for b in range(5):
            expected = torch.tensor(_naive(logits[a, b].tolist(), 7, 0.1), dtype=torch.float64)
            assert torch.allclose(got[a, b].double(), expected, rtol=1e-5, atol=1e-7)


def test_doubly_stochastic_after_20_iters() -> None:
    # unit-scale logits (mixing logits are O(1)); very peaked logits (x4) need more than 20 iterations for 1e-3
    logits = torch.randn(256, 4, 4)
    comb = sinkhorn(logits, 20, 1e-6)
    assert (comb > 0).all()
    assert torch.allclose(comb.sum(-1), torch.ones(256, 4), atol=1e-3)
    assert torch.allclose(comb.sum(-2), torch.ones(256, 4), atol=1e-5)  # the last step normalizes columns


def test_hand_values_one_iter() -> None:
    # equal logits: softmax 1/2 + eps each; column sums 1 + 2eps -> (1/2 + eps) / (1 + 3 eps)
    eps = 0.5
    got = sinkhorn(torch.zeros(2, 2), 1, eps)
    assert torch.allclose(got, torch.full((2, 2), (0.5 + eps) / (1 + 3 * eps)))
