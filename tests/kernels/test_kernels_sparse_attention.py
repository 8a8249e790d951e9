"""kernels.ref.sparse_attention: one softmax over gathered window + compressed rows with a denominator-only sink,
vs a naive per-query, per-head float64 loop."""

from __future__ import annotations

import math

import pytest
import torch

from kernels import sparse_attention
from kernels.ref.kv_codec import decode_kv, encode_kv


def _naive(q: torch.Tensor, wkv: torch.Tensor, widx: torch.Tensor, ckv: torch.Tensor, cidx: torch.Tensor,
           sinks: torch.Tensor, scale: float) -> torch.Tensor:
    t_count, heads, dim = q.shape
    out = torch.zeros(t_count, heads, dim, dtype=torch.float64)
    for t in range(t_count):
        rows = [wkv[i].double() for i in widx[t].tolist() if i >= 0]
        rows += [ckv[j].double() for j in cidx[t].tolist() if j >= 0]
        for h in range(heads):
            logits = [float(q[t, h].double() @ r) * scale for r in rows]
            peak = max(logits + [float(sinks[h])])
            weights = [math.exp(v - peak) for v in logits]
            denom = sum(weights) + math.exp(float(sinks[h]) - peak)
            for w, r in zip(weights, rows):
                out[t, h] += w / denom * r
    return out


def _case(t: int, h: int, d: int, nw: int, w: int, nc: int, c: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    q = torch.randn(t, h, d, generator=gen)
    wkv, ckv = torch.randn(nw, d, generator=gen), torch.randn(nc, d, generator=gen)
    widx = torch.randint(-1, nw, (t, w), generator=gen)
    cidx = torch.randint(-1, nc, (t, c), generator=gen) if nc else torch.full((t, c), -1)
    sinks = torch.randn(h, generator=gen)
    return q, wkv, widx, ckv, cidx, sinks


@pytest.mark.parametrize(("t", "h", "d", "nw", "w", "nc", "c"), [
    (5, 4, 16, 10, 6, 7, 3), (1, 2, 8, 4, 4, 3, 3), (3, 3, 12, 6, 5, 0, 2), (4, 2, 8, 5, 0, 9, 4),
])
def test_matches_naive_softmax_with_sink(t: int, h: int, d: int, nw: int, w: int, nc: int, c: int) -> None:
    gen = torch.Generator().manual_seed(t * 100 + d)
    args = _case(t, h, d, nw, w, nc, c, gen)
    got = sparse_attention(*args, d**-0.5)
    assert got.shape == (t, h, d) and got.dtype == torch.float32
    assert torch.allclose(got.double(), _naive(*args, d**-0.5), atol=1e-5)


def test_more_queries_than_the_internal_block() -> None:
    gen = torch.Generator().manual_seed(300)
    args = _case(300, 2, 8, 40, 6, 20, 4, gen)
    got = sparse_attention(*args, 0.3)
    assert torch.allclose(got.double(), _naive(*args, 0.3), atol=1e-5)
    assert torch.allclose(got[256:], sparse_attention(args[0][256:], args[1], args[2][256:], args[3], args[4][256:],
                                                      args[5], 0.3), atol=1e-6)


def test_minus_one_and_all_masked_compressed_ids() -> None:
    gen = torch.Generator().manual_seed(1)
    q, wkv, widx, ckv, cidx, sinks = _case(4, 2, 8, 6, 4, 5, 3, gen)
    cidx = torch.full_like(cidx, -1)
    got = sparse_attention(q, wkv, widx, ckv, cidx, sinks, 0.5)
    assert torch.allclose(got.double(), _naive(q, wkv, widx, ckv, cidx, sinks, 0.5), atol=1e-5)
    # dropping the all -1 compressed columns, or the compressed rows entirely, changes nothing
    assert torch.allclose(got, sparse_attention(q, wkv, widx, ckv[:0], cidx[:, :0], sinks, 0.5), atol=1e-6)
    # appending -1 columns to the window ids changes nothing either
    wider = torch.cat((widx, torch.full((4, 3), -1)), dim=1)
    assert torch.allclose(got, sparse_attention(q, wkv, wider, ckv, cidx, sinks, 0.5), atol=1e-6)


def test_nothing_selected_gives_zero() -> None:
    q = torch.randn(2, 3, 4)
    got = sparse_attention(q, torch.randn(3, 4), torch.full((2, 2), -1), torch.randn(2, 4), torch.full((2, 1), -1),
                           torch.zeros(3), 1.0)
    assert torch.equal(got, torch.zeros(2, 3, 4))


def test_hand_computed_single_query() -> None:
    # two rows, logits 0 and ln 2 (scale 1), sink 0: weights 1, 2 over denominator 1 + 2 + 1 = 4
    q = torch.tensor([[[math.log(2.0), 0.0]]])
    wkv = torch.tensor([[0.0, 4.0]])  # logit 0
    ckv = torch.tensor([[1.0, 0.0]])  # logit ln 2
    got = sparse_attention(q, wkv, torch.tensor([[0]]), ckv, torch.tensor([[0]]), torch.tensor([0.0]), 1.0)
    assert torch.allclose(got, torch.tensor([[[0.5, 1.0]]]))  # (1 * [0, 4] + 2 * [1, 0]) / 4
    # a very negative sink vanishes: plain softmax (1/3, 2/3)
    got = sparse_attention(q, wkv, torch.tensor([[0]]), ckv, torch.tensor([[0]]), torch.tensor([-100.0]), 1.0)
    assert torch.allclose(got, torch.tensor([[[2 / 3, 4 / 3]]]))


def test_large_logits_are_stable_and_bf16_inputs() -> None:
    q = (torch.randn(3, 2, 16) * 30).to(torch.bfloat16)
    wkv, ckv = (torch.randn(8, 16) * 30).to(torch.bfloat16), (torch.randn(4, 16) * 30).to(torch.bfloat16)
    widx, cidx = torch.randint(0, 8, (3, 5)), torch.randint(-1, 4, (3, 2))
    sinks = torch.tensor([50.0, -50.0])
    got = sparse_attention(q, wkv, widx, ckv, cidx, sinks, 16**-0.5)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    assert torch.allclose(got.double(), _naive(q, wkv, widx, ckv, cidx, sinks, 16**-0.5), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("select_few", [False, True])
def test_stored_entries_read_as_their_decoded_rows(select_few: bool) -> None:
    # official numerics pass the window log and the pages in their stored form (FP8 nope dims, bf16 rope dims):
    # the result is that of the decoded float rows, whether top-k picks a few entries or every entry is read
    gen = torch.Generator().manual_seed(7)
    dim, rope = 128, 64
    q, wkv, widx, ckv, cidx, sinks = _case(3, 2, dim, 9, 5, 40 if select_few else 4, 6, gen)
    wst, cst = encode_kv(wkv, rope), encode_kv(ckv, rope)
    got = sparse_attention(q, wst, widx, cst, cidx, sinks, dim**-0.5, rope)
    expected = sparse_attention(q, decode_kv(wst, dim, rope), widx, decode_kv(cst, dim, rope), cidx, sinks, dim**-0.5)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_training_attends_by_slices_with_the_gathered_values_and_gradients() -> None:
    """With gradients (whole sequences in training), the twin attends each query block's band and visible entries
    as matrix products: the same outputs and gradients as gathering each query's rows."""
    from kernels.ref import sparse_attention as twin

    gen = torch.Generator().manual_seed(11)
    t, heads, dim, window = 300, 4, 64, 16
    positions = torch.arange(t)
    window_idx = ((positions - (window - 1))[:, None] + torch.arange(window)).clamp(min=-1)
    visible = (positions + 1) // 4
    comp_idx = torch.stack([torch.randperm(75, generator=gen)[:5] for _ in range(t)])
    comp_idx = torch.where(comp_idx < visible[:, None], comp_idx, -1)
    inputs = [torch.randn(t, heads, dim, generator=gen), torch.randn(t, dim, generator=gen),
              torch.randn(75, dim, generator=gen)]
    sinks = torch.randn(heads, generator=gen)
    results = []
    for attend in (twin._by_slices, None):
        q, window_kv, comp_kv = (x.clone().requires_grad_(True) for x in inputs)
        if attend is None:
            out = twin._gathered(q, window_kv, window_idx, comp_kv, comp_idx, sinks, 0.125, 0)
        else:
            out = attend(q, window_kv, window_idx, comp_kv, comp_idx, sinks, 0.125)
        (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
        results.append([out.detach(), q.grad, window_kv.grad, comp_kv.grad])
    for sliced, gathered in zip(*results, strict=True):
        torch.testing.assert_close(sliced, gathered, rtol=1e-5, atol=1e-6)
    q, window_kv, comp_kv = (x.clone().requires_grad_(True) for x in inputs)
    routed = twin.sparse_attention(q, window_kv, window_idx, comp_kv, comp_idx, sinks, 0.125)
    torch.testing.assert_close(routed.detach(), results[0][0])  # the twin takes this path under autograd
