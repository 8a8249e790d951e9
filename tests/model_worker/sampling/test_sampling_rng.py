"""RequestRng: a pure, seedable stream with an 8-byte state that restores exactly."""

from __future__ import annotations

import math

import pytest

from model_worker.sampling import RequestRng


def _bin_counts(values: list[float], num_bins: int) -> list[int]:
    counts = [0] * num_bins
    for value in values:
        counts[int(value * num_bins)] += 1
    return counts


def _assert_uniform(values: list[float], num_bins: int = 20) -> None:
    """Each bin within 5 sigma of its expectation (a 1e-6 per-bin false alarm for a fair stream)."""
    expected = len(values) / num_bins
    sigma = math.sqrt(expected * (1 - 1 / num_bins))
    for count in _bin_counts(values, num_bins):
        assert abs(count - expected) < 5 * sigma, (count, expected)


def test_same_seed_same_stream_and_draws_are_pure() -> None:
    a, b = RequestRng(1234), RequestRng(1234)
    draws = [a.uniform(n) for n in range(100)]
    assert draws == [b.uniform(n) for n in range(100)]
    assert a.uniform(37) == draws[37]  # re-reading a position does not advance anything
    assert all(0.0 <= u < 1.0 for u in draws)
    assert len(set(draws)) == 100


def test_different_and_absent_seeds_give_different_streams() -> None:
    assert [RequestRng(1).uniform(n) for n in range(8)] != [
        RequestRng(2).uniform(n) for n in range(8)
    ]
    assert RequestRng().seed != RequestRng().seed  # os.urandom: equal with probability 2**-64


def test_state_round_trip_is_exact() -> None:
    rng = RequestRng()
    state = rng.get_state()
    assert isinstance(state, bytes) and len(state) == 8
    restored = RequestRng.from_state(state)
    assert restored == rng and restored.seed == rng.seed
    assert [restored.uniform(n) for n in range(50)] == [rng.uniform(n) for n in range(50)]
    other = RequestRng(5)
    other.set_state(state)
    assert other.uniform(7) == rng.uniform(7)


def test_negative_seed_maps_into_64_bits() -> None:
    assert RequestRng(-1).seed == (1 << 64) - 1
    assert RequestRng(-1).uniform(0) == RequestRng((1 << 64) - 1).uniform(0)


def test_bad_state_length_raises() -> None:
    with pytest.raises(ValueError, match="8 bytes"):
        RequestRng.from_state(b"\x00" * 7)


def test_stream_along_counter_is_uniform() -> None:
    rng = RequestRng(7)
    _assert_uniform([rng.uniform(n) for n in range(40_000)])


def test_first_draws_across_adjacent_seeds_are_uniform() -> None:
    # Requests seeded 0, 1, 2, ... must not yield correlated first tokens.
    _assert_uniform([RequestRng(seed).uniform(0) for seed in range(40_000)])


def test_consecutive_draws_are_uncorrelated() -> None:
    rng = RequestRng(99)
    draws = [rng.uniform(n) for n in range(20_001)]
    n = len(draws) - 1
    mean = sum(draws) / len(draws)
    lag1 = sum((draws[i] - mean) * (draws[i + 1] - mean) for i in range(n)) / n
    # Autocorrelation of independent U(0,1) has std 1/sqrt(n); variance is 1/12.
    assert abs(lag1 / (1 / 12)) < 5 / math.sqrt(n)
