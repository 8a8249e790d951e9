"""kernels.triton.sparse_attention and kernels.triton.compressor_pool against their torch twins (kernels/ref).

Every comparison draws fresh random inputs (never zeros) and asserts torch.testing.assert_close with rtol=1e-5,
atol=1e-6: both kernels compute in float32 like the twins, so only the summation order differs. Without CUDA the
kernels run on Triton's CPU interpreter (tests/conftest.py sets TRITON_INTERPRET=1), so the shapes stay small.
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("triton")

from kernels.ref.compressor_pool import compressor_pool as ref_pool  # noqa: E402
from kernels.ref.kv_codec import encode_kv, kv_entry_bytes  # noqa: E402
from kernels.ref.sparse_attention import sparse_attention as ref_attention  # noqa: E402
from kernels.triton import sparse_attention as triton_attention_module  # noqa: E402
from kernels.triton.compressor_pool import compressor_pool  # noqa: E402
from kernels.triton.sparse_attention import sparse_attention  # noqa: E402

TOL = {"rtol": 1e-5, "atol": 1e-6}


@pytest.fixture
def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _ids(t: int, width: int, rows: int, device: str) -> torch.Tensor:
    """[t, width] row ids in [0, rows) with about a third of them -1 (no entry)."""
    ids = torch.randint(0, rows, (t, width))
    ids[torch.rand(t, width) < 0.35] = -1
    return ids.to(device)


def _attention_case(t: int, h: int, d: int, w: int, c: int, device: str) -> tuple:
    nw, nc = w + 5, 2 * c + 3
    q = torch.randn(t, h, d, device=device)
    window_kv, comp_kv = torch.randn(nw, d, device=device), torch.randn(nc, d, device=device)
    window_idx, comp_idx = _ids(t, w, nw, device), _ids(t, c, nc, device)
    if t:
        window_idx[t // 2], comp_idx[t // 2] = -1, -1  # one query with no entries at all
    sinks = torch.randn(h, device=device)
    return q, window_kv, window_idx, comp_kv, comp_idx, sinks, d**-0.5


def _check_attention(args: tuple) -> torch.Tensor:
    got = sparse_attention(*args)
    q = args[0]
    assert got.shape == q.shape and got.dtype == torch.float32
    if args[2].shape[1] + args[4].shape[1] == 0:  # the twin's amax rejects zero columns; its math gives the sink all
        torch.testing.assert_close(got, torch.zeros_like(got), rtol=0, atol=0)
    else:
        torch.testing.assert_close(got, ref_attention(*args), **TOL)
    return got


@pytest.mark.parametrize("d", [16, 40, 64])
@pytest.mark.parametrize("h", [1, 3, 8])
@pytest.mark.parametrize("t", [0, 1, 4, 9])
def test_sparse_attention_matches_twin(t: int, h: int, d: int, device: str) -> None:
    w, c = int(torch.randint(0, 17, ())), int(torch.randint(0, 21, ()))
    args = _attention_case(t, h, d, w, c, device)
    got = _check_attention(args)
    if t:  # query t // 2 has no entries: the sink alone takes all the weight and the output is exactly 0
        assert torch.equal(got[t // 2], torch.zeros_like(got[t // 2]))


def test_sparse_attention_streams_many_blocks_of_entries_and_heads(device: str, monkeypatch) -> None:
    # tiny tiles: 16 heads and 16 entries per block, so the online softmax rescales across many blocks and two head
    # blocks, the second one partly masked
    monkeypatch.setattr(triton_attention_module, "_TILE_ELEMS", 512)
    _check_attention(_attention_case(3, 20, 40, 37, 50, device))


@pytest.mark.parametrize(("w", "c", "no_comp_rows"), [(0, 7, False), (6, 0, False), (6, 4, True), (0, 0, False)])
def test_sparse_attention_without_window_or_compressed_entries(w: int, c: int, no_comp_rows: bool,
                                                               device: str) -> None:
    q, window_kv, window_idx, comp_kv, comp_idx, sinks, scale = _attention_case(4, 3, 24, w, c, device)
    if no_comp_rows:  # a layer whose compressor has not emitted anything yet: no rows, all ids -1
        comp_kv, comp_idx = comp_kv[:0], torch.full_like(comp_idx, -1)
    _check_attention((q, window_kv, window_idx, comp_kv, comp_idx, sinks, scale))


def test_sparse_attention_bf16_rows_int32_ids_and_strided_cache(device: str) -> None:
    q, window_kv, window_idx, comp_kv, comp_idx, sinks, scale = _attention_case(5, 4, 40, 12, 9, device)
    cache = torch.randn(window_kv.shape[0], 64, device=device)
    strided = cache[:, 8:48]  # a slice of a wider cache: row stride 64, not copied
    args = (q.bfloat16(), strided, window_idx.int(), comp_kv.bfloat16(), comp_idx.int(), sinks, scale)
    _check_attention(args)


@pytest.mark.parametrize("select_few", [False, True])
def test_sparse_attention_over_stored_entries(select_few: bool, device: str) -> None:
    # official numerics: FP8 e4m3 nope dims with ue8m0 scales and bf16 rope dims, decoded in registers; the window
    # a view of a wider log (row stride not the entry size)
    dim, rope = 128, 64
    q, window_kv, window_idx, comp_kv, comp_idx, sinks, scale = _attention_case(3, 5, dim, 9, 6, device)
    magnitude = 1.0
    if not select_few:  # every entry read; values past 448, so their scales exceed 1 (q shrunk to keep logits sane)
        magnitude, q = 600.0, q / 600.0
        comp_kv, comp_idx = comp_kv[:4] * magnitude, comp_idx.clamp(max=3)
    width = kv_entry_bytes(dim, rope)
    log = torch.zeros(window_kv.shape[0], width + 16, dtype=torch.uint8, device=device)
    log[:, :width] = encode_kv(window_kv.cpu(), rope).to(device)
    args = (q, log[:, :width], window_idx, encode_kv(comp_kv.cpu(), rope).to(device), comp_idx, sinks, scale, rope)
    got = sparse_attention(*args)
    torch.testing.assert_close(got, ref_attention(*args), rtol=TOL["rtol"], atol=TOL["atol"] * magnitude)


def test_sparse_attention_hand_computed(device: str) -> None:
    # one head, rows e0 and e1, q = e0, scale 1: logits (1, 0) and sink 0 -> weights e / (e + 2), 1 / (e + 2)
    eye = torch.eye(16, device=device)
    q = eye[:1].reshape(1, 1, 16)
    got = sparse_attention(q, eye[:1], torch.tensor([[0, -1]], device=device), eye[1:2],
                           torch.tensor([[-1, 0]], device=device), torch.zeros(1, device=device), 1.0)
    expected = torch.zeros(16, device=device)
    expected[0], expected[1] = math.e / (math.e + 2), 1 / (math.e + 2)
    torch.testing.assert_close(got[0, 0], expected, **TOL)


@pytest.mark.parametrize("c", [16, 24])
@pytest.mark.parametrize("s", [4, 8])
@pytest.mark.parametrize("g", [0, 1, 5])
def test_compressor_pool_matches_twin(g: int, s: int, c: int, device: str) -> None:
    kv, score = torch.randn(g, s, c, device=device), torch.randn(g, s, c, device=device) * 3
    if g:
        score[0, : s // 2] = -math.inf  # CSA's first group: the previous group's overlap slots are absent
        kv[0, : s // 2] = 1e6  # would dominate if it leaked in
    holes = torch.rand(g, s, c, device=device) < 0.2
    holes[:, -1] = False  # every channel keeps a finite score
    score[holes] = -math.inf
    got = compressor_pool(kv, score)
    assert got.shape == (g, c) and got.dtype == torch.float32
    torch.testing.assert_close(got, ref_pool(kv, score), **TOL)


def test_compressor_pool_hca_group_spans_channel_blocks(device: str) -> None:
    # 128 slots (HCA) leave 32 channels per program: 40 channels take two programs, the second partly masked
    kv, score = torch.randn(3, 128, 40, device=device), torch.randn(3, 128, 40, device=device) * 2
    torch.testing.assert_close(compressor_pool(kv, score), ref_pool(kv, score), **TOL)
