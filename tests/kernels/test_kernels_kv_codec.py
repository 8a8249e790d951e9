"""kernels.ref.kv_codec: stored KV entries (FP8 nope | bf16 rope | ue8m0 scales | pad) and FP4 indexer keys."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_oracles import naive_fp4, naive_fp8, pow2_exponent

from kernels import fp4_round_trip, fp8_round_trip
from kernels.ref.kv_codec import (
    decode_index_keys,
    decode_kv,
    encode_index_keys,
    encode_kv,
    index_key_bytes,
    kv_entry_bytes,
)

HYP = settings(max_examples=30, derandomize=True, deadline=None)


def test_entry_sizes() -> None:
    assert kv_entry_bytes(512, 64) == 584  # 448 + 128 + 7 = 583, padded to 8
    assert kv_entry_bytes(128, 64) == 64 + 128 + 1 + 7
    assert kv_entry_bytes(192, 64) == 128 + 128 + 2 + 6
    assert index_key_bytes(128) == 68
    assert index_key_bytes(64) == 34


def _kv_input(n: int, dim: int, rope: int, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(n, dim, generator=gen) * torch.logspace(-3, 3, n, dtype=torch.float32)[:, None]
    return torch.cat((fp8_round_trip(x[:, : dim - rope], 64), x[:, dim - rope :].bfloat16().float()), dim=1)


@pytest.mark.parametrize(("n", "dim", "rope"), [(5, 512, 64), (1, 128, 64), (3, 192, 64)])
def test_kv_round_trip_exact_for_official_numerics(n: int, dim: int, rope: int) -> None:
    x = _kv_input(n, dim, rope, torch.Generator().manual_seed(dim + n))
    stored = encode_kv(x, rope)
    assert stored.dtype == torch.uint8 and stored.shape == (n, kv_entry_bytes(dim, rope))
    got = decode_kv(stored, dim, rope)
    assert got.dtype == torch.float32 and torch.equal(got, x)


def test_kv_encode_quantizes_like_the_naive_round_trip() -> None:
    x = torch.randn(4, 512) * 7
    expected = torch.cat((naive_fp8(x[:, :448], 64), x[:, 448:].bfloat16().float()), dim=1)
    assert torch.equal(decode_kv(encode_kv(x, 64), 512, 64), expected)


def test_kv_byte_layout() -> None:
    x = _kv_input(3, 512, 64, torch.Generator().manual_seed(0))
    stored = encode_kv(x, 64).numpy()
    for r in range(3):
        # bf16 rope dims, little endian, at bytes 448..575: the top 16 bits of the float32
        for j in range(64):
            lo, hi = int(stored[r, 448 + 2 * j]), int(stored[r, 449 + 2 * j])
            value = struct.unpack("<f", struct.pack("<I", (lo | hi << 8) << 16))[0]
            assert value == float(x[r, 448 + j])
        # 7 scale bytes at 576..582 (127 + exponent of each 64-block), then one zero pad byte
        for b in range(7):
            amax = max(float(x[r, 64 * b : 64 * b + 64].abs().max()), 1e-4)
            assert int(stored[r, 576 + b]) == 127 + pow2_exponent(amax, 448.0)
        assert stored[r, 583] == 0
        # the first 448 bytes are e4m3 codes: value = code value * 2^(scale - 127)
        codes = torch.from_numpy(stored[r, :448].copy()).view(torch.float8_e4m3fn).double().numpy()
        scales = np.repeat(2.0 ** (stored[r, 576:583].astype(np.float64) - 127), 64)
        assert np.array_equal(codes * scales, x[r, :448].double().numpy())


def test_kv_all_zero_entry() -> None:
    stored = encode_kv(torch.zeros(2, 512), 64)
    assert torch.equal(decode_kv(stored, 512, 64), torch.zeros(2, 512))
    assert (stored[:, :576] == 0).all()


@given(st.integers(0, 2**31 - 1), st.integers(1, 4), st.sampled_from([32, 64, 128]), st.floats(1e-12, 1e12))
@HYP
def test_index_keys_equal_fp4_round_trip(seed: int, n: int, dim: int, mag: float) -> None:
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)) * mag
    stored = encode_index_keys(x)
    assert stored.dtype == torch.uint8 and stored.shape == (n, index_key_bytes(dim))
    got = decode_index_keys(stored, dim)
    assert torch.equal(got, fp4_round_trip(x, 32))
    assert torch.equal(got, naive_fp4(x, 32))


def test_index_key_byte_layout() -> None:
    # block 0: amax 6 -> scale byte 127, codes 6 -> 7, 0.5 -> 1 (low nibble first); block 1: amax 3 -> 2^-1 -> 126
    x = torch.zeros(1, 64)
    x[0, 0], x[0, 1] = 6.0, 0.5
    x[0, 32], x[0, 33] = -3.0, 1.0  # / 0.5 -> -6 (code 15), 2 (code 4)
    stored = encode_index_keys(x)[0].tolist()
    assert stored[0] == 0x17 and stored[16] == 0x4F
    assert all(b == 0 for i, b in enumerate(stored[:32]) if i not in (0, 16))
    assert stored[32:] == [127, 126]
    assert decode_index_keys(torch.tensor([stored], dtype=torch.uint8), 64).tolist() == [x[0].tolist()]
