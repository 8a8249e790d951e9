"""kernels.ref.hadamard: x @ H_d with the Sylvester-order Walsh-Hadamard matrix scaled by d^-0.5."""

from __future__ import annotations

import math

import pytest
import torch

from kernels import hadamard

DIMS = [1, 2, 4, 8, 16, 32, 64, 128, 256]


def _recursive_sylvester(d: int) -> list[list[float]]:
    """Unscaled H_d = [[H, H], [H, -H]] built recursively in plain Python."""
    if d == 1:
        return [[1.0]]
    h = _recursive_sylvester(d // 2)
    return [row + row for row in h] + [row + [-v for v in row] for row in h]


def _matrix_of(d: int) -> torch.Tensor:
    """The op's matrix, read off by rotating the identity (float64 view of float32 results)."""
    return hadamard(torch.eye(d)).double()


@pytest.mark.parametrize("d", DIMS)
def test_sylvester_order_vs_recursive_and_closed_form(d: int) -> None:
    expected = torch.tensor(_recursive_sylvester(d), dtype=torch.float64) / math.sqrt(d)
    got = _matrix_of(d)
    assert torch.allclose(got, expected, rtol=0, atol=1e-7)
    # closed form: H[i, j] = (-1)^popcount(i & j)
    signs = torch.tensor([[(-1.0) ** bin(i & j).count("1") for j in range(d)] for i in range(d)], dtype=torch.float64)
    assert torch.equal(torch.sign(got), signs)


@pytest.mark.parametrize("d", DIMS)
def test_orthogonal(d: int) -> None:
    h = _matrix_of(d)
    assert torch.allclose(h @ h.T, torch.eye(d, dtype=torch.float64), atol=1e-6)
    x = torch.randn(5, d)
    assert torch.allclose(hadamard(hadamard(x)), x, atol=1e-5)  # symmetric and orthogonal: its own inverse
    assert torch.allclose(hadamard(x).norm(dim=-1), x.norm(dim=-1), rtol=1e-5)


def test_leading_dims_and_hand_values() -> None:
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0]], [[1.0, 0.0, 0.0, 0.0]]])
    got = hadamard(x)
    assert got.shape == (2, 1, 4) and got.dtype == torch.float32
    # rows of H_4: (1,1,1,1), (1,-1,1,-1), (1,1,-1,-1), (1,-1,-1,1); x @ H, scaled by 1/2
    assert got[0, 0].tolist() == [5.0, -1.0, -2.0, 0.0]
    assert got[1, 0].tolist() == [0.5, 0.5, 0.5, 0.5]


def test_bf16_in_bf16_out_computed_in_float32() -> None:
    x = torch.randn(3, 128).to(torch.bfloat16)
    got = hadamard(x)
    assert got.dtype == torch.bfloat16
    expected = x.double() @ (torch.tensor(_recursive_sylvester(128), dtype=torch.float64) / math.sqrt(128))
    assert torch.allclose(got.double(), expected, rtol=2**-8, atol=1e-6)  # one bf16 rounding of the exact result
