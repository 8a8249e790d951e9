"""kernels.ref.indexer_topk: Lightning Indexer scores and causal top-k vs a brute-force Python loop."""

from __future__ import annotations

import pytest
import torch
from kernel_oracles import naive_fp4

import kernels.ref.indexer_topk as indexer_module
from kernels import indexer_topk
from kernels.ref.kv_codec import encode_index_keys


def _brute_scores(q: torch.Tensor, w: torch.Tensor, keys: torch.Tensor, visible: list[int]) -> list[list[float]]:
    """score[t][s] = sum_h w[t,h] * relu(q[t,h] . k[s]) in Python floats; -inf for s >= num_visible[t]."""
    out = []
    for t in range(q.shape[0]):
        row = []
        for s in range(keys.shape[0]):
            if s >= visible[t]:
                row.append(float("-inf"))
                continue
            total = 0.0
            for h in range(q.shape[1]):
                dot = sum(float(a) * float(b) for a, b in zip(q[t, h], keys[s]))
                total += float(w[t, h]) * max(dot, 0.0)
            row.append(total)
        out.append(row)
    return out


def _brute_topk(scores: list[list[float]], k: int) -> list[list[int]]:
    """Sorted index sets of the k best visible entries, padded with -1 (requires no ties among the picks)."""
    result = []
    for row in scores:
        ranked = sorted((s for s in range(len(row)) if row[s] != float("-inf")), key=lambda s: -row[s])
        picks = ranked[:k]
        if len(ranked) > k:
            assert row[ranked[k - 1]] - row[ranked[k]] > 1e-3 * max(1.0, abs(row[ranked[k]])), "test data has a tie"
        result.append(sorted(picks + [-1] * (min(k, len(row)) - len(picks))))
    return result


def _ranked(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Best k per row by (score descending, index ascending), -1 for -inf: the documented tie rule."""
    rows = []
    for row in scores.tolist():
        order = sorted(range(len(row)), key=lambda s: (-row[s], s))[:k]
        rows.append([s if row[s] != float("-inf") else -1 for s in order])
    return torch.tensor(rows, dtype=torch.long)


def _sorted_rows(x: torch.Tensor) -> list[list[int]]:
    return [sorted(row) for row in x.tolist()]


@pytest.mark.parametrize(("t", "h", "c", "n", "k"), [(6, 16, 32, 20, 5), (3, 8, 16, 9, 9), (4, 16, 8, 12, 30)])
def test_matches_brute_force(t: int, h: int, c: int, n: int, k: int) -> None:
    gen = torch.Generator().manual_seed(t * n + k)
    q, keys = torch.randn(t, h, c, generator=gen), torch.randn(n, c, generator=gen)
    w = torch.randn(t, h, generator=gen)
    visible = torch.tensor([n, 0, 1, n - 3, 7, n][:t])
    got = indexer_topk(q, w, keys, visible, k, torch.float32)
    assert got.dtype == torch.long and got.shape == (t, min(k, n))
    assert _sorted_rows(got) == _brute_topk(_brute_scores(q, w, keys, visible.tolist()), k)


def test_hand_values_one_head() -> None:
    keys = torch.eye(6)
    q = torch.tensor([[[1.0, 5.0, 2.0, 4.0, 3.0, 9.0]]])  # scores = q entries; entry 5 is invisible
    got = indexer_topk(q, torch.ones(1, 1), keys, torch.tensor([5]), 6, torch.float32)
    assert _sorted_rows(got) == [[-1, 0, 1, 2, 3, 4]]
    assert _sorted_rows(indexer_topk(q, torch.ones(1, 1), keys, torch.tensor([5]), 2, torch.float32)) == [[1, 3]]
    assert _sorted_rows(indexer_topk(q, torch.ones(1, 1), keys, torch.tensor([6]), 1, torch.float32)) == [[5]]


def test_picks_are_best_first_and_minus_one_last() -> None:
    keys = torch.eye(6)
    q = torch.tensor([[[1.0, 5.0, 2.0, 4.0, 3.0, 9.0]]])
    got = indexer_topk(q, torch.ones(1, 1), keys, torch.tensor([5]), 6, torch.float32)
    assert got.tolist() == [[1, 3, 4, 2, 0, -1]]


@pytest.mark.parametrize("key_block", [1, 3, 4, 7])
def test_running_topk_over_key_blocks(monkeypatch: pytest.MonkeyPatch, key_block: int) -> None:
    monkeypatch.setattr(indexer_module, "KEY_BLOCK", key_block)
    gen = torch.Generator().manual_seed(key_block)
    t, h, c, n, k = 5, 16, 16, 23, 6
    q, keys, w = torch.randn(t, h, c, generator=gen), torch.randn(n, c, generator=gen), torch.randn(t, h, generator=gen)
    visible = torch.tensor([23, 2, 0, 10, 17])
    got = indexer_topk(q, w, keys, visible, k, torch.float32)
    scores = _brute_scores(q, w, keys, visible.tolist())
    assert _sorted_rows(got) == _brute_topk(scores, k)
    for row, picks in enumerate(got.tolist()):  # best first, -1 last
        valid = [s for s in picks if s >= 0]
        assert picks == valid + [-1] * (len(picks) - len(valid))
        assert [scores[row][s] for s in valid] == sorted((scores[row][s] for s in valid), reverse=True)


@pytest.mark.parametrize("key_block", [5, 16384])
def test_stored_fp4_keys(monkeypatch: pytest.MonkeyPatch, key_block: int) -> None:
    monkeypatch.setattr(indexer_module, "KEY_BLOCK", key_block)
    gen = torch.Generator().manual_seed(17)
    t, h, c, n, k = 4, 16, 64, 12, 5
    q, keys, w = torch.randn(t, h, c, generator=gen), torch.randn(n, c, generator=gen), torch.rand(t, h, generator=gen)
    visible = torch.tensor([12, 4, 9, 1])
    got = indexer_topk(q, w, encode_index_keys(keys), visible, k, torch.float32)
    assert got.shape == (t, k)
    assert _sorted_rows(got) == _brute_topk(_brute_scores(q, w, naive_fp4(keys, 32), visible.tolist()), k)


def test_relu_per_head_and_negative_head_weights() -> None:
    # head 0 sees (1, -2), head 1 sees (-1, 3) -> relu: (1, 0), (0, 3); w = (2, -1) -> scores (2, -3)
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    keys = torch.tensor([[1.0, -1.0], [-2.0, 3.0]])
    got = indexer_topk(q, torch.tensor([[2.0, -1.0]]), keys, torch.tensor([2]), 2, torch.float32)
    assert got.tolist() == [[0, 1]]
    got = indexer_topk(q, torch.tensor([[-2.0, 1.0]]), keys, torch.tensor([2]), 1, torch.float32)
    assert got.tolist() == [[1]]


def test_bf16_score_rounding() -> None:
    # integer data -> exact scores; bf16 keeps 8 significant bits, so nearby large scores collapse into ties
    gen = torch.Generator().manual_seed(3)
    t, h, c, n, k = 5, 16, 16, 40, 8
    q = torch.randint(-3, 4, (t, h, c), generator=gen).float()
    keys = torch.randint(-3, 4, (n, c), generator=gen).float()
    w = torch.randint(1, 4, (t, h), generator=gen).float()
    visible = torch.tensor([40, 30, 3, 0, 17])
    exact = torch.tensor(_brute_scores(q, w, keys, visible.tolist()), dtype=torch.float64)
    rounded = exact.to(torch.bfloat16).double()
    assert (rounded[torch.isfinite(exact)] != exact[torch.isfinite(exact)]).any()  # rounding does bite
    got = indexer_topk(q.bfloat16(), w, keys.bfloat16(), visible, k, torch.bfloat16)
    for row in range(t):
        picks = [s for s in got[row].tolist() if s >= 0]
        assert len(picks) == len(set(picks)) == min(k, int(visible[row]))
        assert all(s < int(visible[row]) for s in picks)
        others = [s for s in range(int(visible[row])) if s not in picks]
        if picks and others:
            assert min(rounded[row, picks]) >= max(rounded[row, others])  # best k under bf16 scores
    # independently computed rounded scores, ties to the lower index
    assert torch.equal(got, _ranked(rounded, k))


def test_bf16_rounding_changes_the_selection() -> None:
    # scores 256 (x4), 257 (x4; a bf16 tie that rounds to 256), 100, 300: in fp32 the 257s win, in bf16 8 entries tie
    keys = torch.tensor([256.0] * 4 + [257.0] * 4 + [100.0, 300.0])[:, None]
    q, w, visible = torch.ones(2, 1, 1), torch.ones(2, 1), torch.tensor([10, 8])
    got = indexer_topk(q, w, keys, visible, 5, torch.bfloat16)
    exact = torch.tensor(_brute_scores(q, w, keys, visible.tolist()))
    rounded = exact.to(torch.bfloat16).float()
    assert rounded[0, :8].tolist() == [256.0] * 8
    assert got.tolist() == [[9, 0, 1, 2, 3], [0, 1, 2, 3, 4]]  # ties go to the lower index
    assert torch.equal(got, _ranked(rounded, 5))
    fp32 = _sorted_rows(indexer_topk(q, w, keys, visible, 5, torch.float32))
    assert fp32[0] == [4, 5, 6, 7, 9]  # without rounding the four 257s are strictly better
    assert _sorted_rows(got)[0] != fp32[0]  # guards the construction: bf16 rounding changes the pick


def test_k_larger_than_n_returns_n_columns() -> None:
    q, keys = torch.randn(2, 4, 8), torch.randn(3, 8)
    got = indexer_topk(q, torch.rand(2, 4) + 0.1, keys, torch.tensor([3, 2]), 10, torch.float32)
    assert got.shape == (2, 3)
    assert _sorted_rows(got) == [[0, 1, 2], [-1, 0, 1]]


def test_empty_entries_and_empty_queries() -> None:
    got = indexer_topk(torch.randn(3, 4, 8), torch.rand(3, 4), torch.zeros(0, 8), torch.zeros(3, dtype=torch.long),
                       5, torch.bfloat16)
    assert got.shape == (3, 0) and got.dtype == torch.long
    got = indexer_topk(torch.zeros(0, 4, 8), torch.zeros(0, 4), torch.randn(7, 8), torch.zeros(0, dtype=torch.long),
                       5, torch.bfloat16)
    assert got.shape == (0, 5) and got.dtype == torch.long


def test_nothing_visible_gives_all_minus_one() -> None:
    got = indexer_topk(torch.randn(2, 4, 8), torch.rand(2, 4), torch.randn(6, 8), torch.tensor([0, 0]), 4,
                       torch.float32)
    assert got.tolist() == [[-1] * 4] * 2
