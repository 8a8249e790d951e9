"""indexer_topk over keys read through a row index (entries in the pages of a shared pool): every backend picks the
same ids, in the same order, as over the same keys laid out contiguously."""

from __future__ import annotations

import pytest
import torch

import kernels.triton.indexer_topk as triton_module
from kernels.cpu import indexer_topk as cpu_module
from kernels.ref import indexer_topk as ref_module
from kernels.ref.kv_codec import encode_index_keys

BACKENDS = {"ref": ref_module.indexer_topk, "cpu": cpu_module.indexer_topk, "triton": triton_module.indexer_topk}


def _pool_of(keys: torch.Tensor, page: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The keys scattered over the pages of a larger storage in shuffled order, other rows noise: (storage, rows)."""
    pages = -(-keys.shape[0] // page)
    slots = torch.randperm(3 * pages, generator=gen)[:pages]
    storage = torch.randint(0, 256, (3 * pages * page, keys.shape[1]), dtype=torch.uint8, generator=gen)
    rows = (slots[:, None] * page + torch.arange(page)).flatten()[: keys.shape[0]]
    storage[rows] = keys
    return storage, rows


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize(("t", "n", "topk"), [(1, 300, 32), (4, 130, 16), (8, 64, 100), (20, 200, 24)])
def test_rows_pick_what_contiguous_keys_pick(backend: str, t: int, n: int, topk: int) -> None:
    gen = torch.Generator().manual_seed(t * 1000 + n)
    heads, dim = 8, 64
    q = torch.randn(t, heads, dim, generator=gen)
    weights = torch.randn(t, heads, generator=gen)
    keys = encode_index_keys(torch.randn(n, dim, generator=gen))
    visible = torch.randint(1, n + 1, (t,), generator=gen)
    storage, rows = _pool_of(keys, 16, gen)
    indexer = BACKENDS[backend]
    expected = indexer(q, weights, keys, visible, topk, torch.bfloat16)
    got = indexer(q, weights, storage, visible, topk, torch.bfloat16, rows)
    assert torch.equal(got, expected)
    assert torch.equal(expected, ref_module.indexer_topk(q, weights, keys, visible, topk, torch.bfloat16))
