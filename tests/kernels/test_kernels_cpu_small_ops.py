"""kernels.cpu argmax, hadamard and the mHC kernels (a decode step's small ops) against their torch twins."""

from __future__ import annotations

import pytest
import torch
from cpu_twins import assert_falls_back, assert_within_one_bf16_ulp, run_both, skip_when_disabled

pytestmark = skip_when_disabled


@pytest.mark.parametrize("shape", [(1, 129280), (3, 1000), (2, 13), (1, 1)])
def test_argmax_first_index_of_the_maximum(monkeypatch: pytest.MonkeyPatch, shape: tuple[int, int]) -> None:
    logits = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    got, expected = run_both(monkeypatch, "argmax", "argmax", logits)
    assert got.dtype == torch.int64 and torch.equal(got, expected)


def test_argmax_ties_nan_and_signed_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    logits = torch.full((5, 40), -float("inf"))
    logits[0, 17] = logits[0, 30] = 2.0  # a tie: the first
    logits[1, 3] = float("nan")  # NaN counts as the maximum
    logits[1, 9] = float("inf")
    logits[2, 39] = float("nan")  # past the last full vector of 8
    logits[3, 5], logits[3, 6] = -0.0, 0.0  # one value
    logits[4] = torch.arange(40.0).flip(0)  # the maximum in the first lane
    got, expected = run_both(monkeypatch, "argmax", "argmax", logits)
    assert got.tolist() == expected.tolist() == [17, 3, 39, 5, 0]


def test_argmax_falls_back_off_its_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert_falls_back(monkeypatch, "argmax", "argmax", torch.randn(2, 50).to(torch.bfloat16))
    assert_falls_back(monkeypatch, "argmax", "argmax", torch.randn(2, 3, 50))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 8, 128), (3, 64), (5, 2, 256)])
def test_hadamard_matches_the_twin(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    got, expected = run_both(monkeypatch, "hadamard", "hadamard", x)
    if dtype == torch.bfloat16:
        assert_within_one_bf16_ulp(got, expected)
    else:
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_hadamard_falls_back_for_many_rows_and_odd_widths(monkeypatch: pytest.MonkeyPatch) -> None:
    assert_falls_back(monkeypatch, "hadamard", "hadamard", torch.randn(300, 128))
    assert_falls_back(monkeypatch, "hadamard", "hadamard", torch.randn(2, 4))


def _mhc_inputs(t: int, n: int, d: int, rows: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(2)
    streams = torch.randn(t, n, d, generator=gen).to(dtype)
    fn = torch.randn(rows, n * d, generator=gen) * 0.05
    base, scale = torch.randn(rows, generator=gen) * 0.5, torch.rand(3 if rows > n else 1, generator=gen) + 0.5
    return streams, fn, base, scale


def _assert_activation_close(got: torch.Tensor, expected: torch.Tensor) -> None:
    if got.dtype == torch.bfloat16:
        assert_within_one_bf16_ulp(got, expected, atol=1e-5)
    else:
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("t", [1, 3])
def test_hc_pre_post_and_head_match_the_twins(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, t: int) -> None:
    n, d = 4, 64
    streams, fn, base, scale = _mhc_inputs(t, n, d, (2 + n) * n, dtype)
    (collapsed, post, comb), (x, post_ref, comb_ref) = run_both(
        monkeypatch, "mhc", "hc_pre", streams, fn, base, scale, 1e-6, 1e-6, 20)
    _assert_activation_close(collapsed, x)
    torch.testing.assert_close(post, post_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(comb, comb_ref, rtol=1e-4, atol=1e-6)
    output = torch.randn(t, d, generator=torch.Generator().manual_seed(3)).to(dtype)
    got, expected = run_both(monkeypatch, "mhc", "hc_post", output, streams, post_ref, comb_ref)
    _assert_activation_close(got, expected)
    streams, fn, base, scale = _mhc_inputs(t, n, d, n, dtype)
    got, expected = run_both(monkeypatch, "mhc", "hc_head", streams, fn, base, scale, 1e-6, 1e-6)
    _assert_activation_close(got, expected)


def test_hc_head_falls_back_off_its_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    streams, fn, base, scale = _mhc_inputs(1, 4, 12, 4, torch.float32)  # d not a multiple of 8
    assert_falls_back(monkeypatch, "mhc", "hc_head", streams, fn, base, scale, 1e-6, 1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("t", "ratio", "overlap"), [(1, 4, True), (3, 128, False), (16, 4, True)])
def test_compressor_project_matches_the_twin(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, t: int, ratio: int, overlap: bool
) -> None:
    gen = torch.Generator().manual_seed(4)
    dim, features = 256, 2 * 64 if overlap else 64
    x = torch.randn(t, dim, generator=gen).to(dtype)
    wkv, wgate = (torch.randn(features, dim, generator=gen).div(16).to(torch.bfloat16) for _ in range(2))
    ape = torch.randn(ratio, features, generator=gen)
    positions = torch.arange(1000, 1000 + t) * 7  # slots all over the group
    got, expected = run_both(monkeypatch, "compressor_project", "compressor_project", x, wkv, wgate, ape, positions)
    assert got.dtype == torch.float32 and got.shape == (t, 2 * features)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_compressor_project_falls_back_for_prefill_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    x, w = torch.randn(17, 64), torch.randn(8, 64).to(torch.bfloat16)
    assert_falls_back(monkeypatch, "compressor_project", "compressor_project", x, w, w, torch.randn(4, 8),
                      torch.arange(17))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp4_round_trip_on_grid_ties_and_wide_magnitudes(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(5)
    random = torch.randn(64, 128, generator=gen) * torch.logspace(-20, 20, 64)[:, None]
    steps = torch.arange(-6.0, 6.01, 0.125)  # every e2m1 midpoint, tie to even included, with 6 setting the scale
    ties = torch.cat((steps, torch.full((-steps.numel() % 32,), 6.0))).view(-1, 32)
    x = torch.cat((random.view(-1, 32), ties, torch.tensor([[-0.1] + [1.0] * 31, [-0.0] * 31 + [1.0]]))).to(dtype)
    got, expected = run_both(monkeypatch, "act_quant", "fp4_round_trip", x)
    assert torch.equal(got, expected) and torch.equal(got.signbit(), expected.signbit())
