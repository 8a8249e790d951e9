"""kernels.cpu.moe_gate vs its torch twin: every score function, hash / biased / unbiased routing, float32 and bf16
activations, on the shapes the C path takes (the twin is made to raise there); the tie rule of the C top-k; the
shapes that fall back to the twin."""

from __future__ import annotations

import pytest
import torch
from cpu_twins import run_both, skip_when_disabled

from kernels.cpu import moe_gate as cpu_moe_gate
from kernels.ref import moe_gate as ref_moe_gate

pytestmark = skip_when_disabled

SCORE_FUNCS = ("sqrtsoftplus", "sigmoid", "softmax")
TOKENS = [t for t in (1, 3, 16) if t <= cpu_moe_gate.MAX_TOKENS]


def _router(
    tokens: int, dim: int, experts: int, topk: int, routing: str, gen: torch.Generator
) -> tuple[torch.Tensor, ...]:
    """(weight [E, dim] bf16, bias [E] or None, tid2eid [vocab, k] or None, token_ids [T])."""
    weight = (torch.randn(experts, dim, generator=gen) * dim**-0.5).to(torch.bfloat16)
    bias = torch.randn(experts, generator=gen) * 0.1 if routing == "biased" else None
    vocab = 64
    tid2eid = torch.rand(vocab, experts, generator=gen).argsort(dim=1)[:, :topk].contiguous()
    token_ids = torch.randint(0, vocab, (tokens,), generator=gen)
    return weight, bias, tid2eid if routing == "hashed" else None, token_ids


def _scores(x: torch.Tensor, weight: torch.Tensor, score_func: str) -> torch.Tensor:
    logits = x.float() @ weight.float().T
    if score_func == "sqrtsoftplus":
        return torch.nn.functional.softplus(logits).sqrt()
    return logits.sigmoid() if score_func == "sigmoid" else logits.softmax(dim=-1)


def _check(got: tuple[torch.Tensor, torch.Tensor], expected: tuple[torch.Tensor, torch.Tensor]) -> None:
    assert got[0].dtype == torch.int64 and got[1].dtype == torch.float32
    assert torch.equal(got[0], expected[0])
    torch.testing.assert_close(got[1], expected[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("routing", ["hashed", "biased", "unbiased"])
@pytest.mark.parametrize("score_func", SCORE_FUNCS)
@pytest.mark.parametrize("tokens", TOKENS)
def test_moe_gate(
    monkeypatch: pytest.MonkeyPatch, tokens: int, score_func: str, routing: str, x_dtype: torch.dtype
) -> None:
    gen = torch.Generator().manual_seed(tokens * 100 + SCORE_FUNCS.index(score_func) * 10 + len(routing))
    experts, topk = 16, 3
    weight, bias, tid2eid, token_ids = _router(tokens, 256, experts, topk, routing, gen)
    x = (torch.randn(tokens, 256, generator=gen) * 2).to(x_dtype)
    args = (x, weight, bias, tid2eid, token_ids, score_func, topk, 1.5)
    got, expected = run_both(monkeypatch, "moe_gate", "moe_gate", *args)
    assert got[0].shape == (tokens, topk)
    if tid2eid is None:  # the inputs hold no near-ties, where float32 rounding could pick another expert
        ranked = (_scores(x, weight, score_func) + (0 if bias is None else bias)).sort(dim=-1, descending=True).values
        assert bool((ranked[:, topk - 1] - ranked[:, topk] > 1e-5).all())
    _check(got, expected)


@pytest.mark.parametrize("tokens", [1, 5])
def test_moe_gate_wide_router(monkeypatch: pytest.MonkeyPatch, tokens: int) -> None:
    """The Flash router's shape (256 experts over 4096 dims, top 6) and a bf16-stored bias."""
    gen = torch.Generator().manual_seed(tokens)
    weight, bias, _, token_ids = _router(tokens, 4096, 256, 6, "biased", gen)
    x = torch.randn(tokens, 4096, generator=gen).to(torch.bfloat16)
    args = (x, weight, bias.to(torch.bfloat16), None, token_ids, "sqrtsoftplus", 6, 2.5)
    _check(*run_both(monkeypatch, "moe_gate", "moe_gate", *args))


@pytest.mark.parametrize("score_func", SCORE_FUNCS)
def test_moe_gate_ties_go_to_the_lower_expert(score_func: str) -> None:
    """All scores equal (torch.topk leaves their order unspecified): the C top-k takes the lowest ids, in order."""
    weight = torch.ones(8, 64, dtype=torch.bfloat16)
    ids, weights = cpu_moe_gate.moe_gate(torch.zeros(2, 64), weight, None, None, None, score_func, 3, 1.0)
    assert torch.equal(ids, torch.tensor([[0, 1, 2], [0, 1, 2]]))
    expected = 1 / 8 if score_func == "softmax" else 1 / 3
    torch.testing.assert_close(weights, torch.full((2, 3), expected))


def test_moe_gate_rejects_token_ids_outside_the_table() -> None:
    gen = torch.Generator().manual_seed(0)
    weight, _, tid2eid, _ = _router(1, 64, 8, 2, "hashed", gen)
    with pytest.raises(IndexError):
        cpu_moe_gate.moe_gate(torch.randn(1, 64), weight, None, tid2eid, torch.tensor([64]), "sigmoid", 2, 1.0)


@pytest.mark.parametrize("case", ["too_many_tokens", "float32_weight", "dim_not_multiple_of_32", "int32_table",
                                  "float64_x"])
def test_moe_gate_falls_back(monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    gen = torch.Generator().manual_seed(1)
    tokens = cpu_moe_gate.MAX_TOKENS + 1 if case == "too_many_tokens" else 2
    dim = 48 if case == "dim_not_multiple_of_32" else 64
    routing = "hashed" if case == "int32_table" else "biased"
    weight, bias, tid2eid, token_ids = _router(tokens, dim, 8, 2, routing, gen)
    x = torch.randn(tokens, dim, generator=gen, dtype=torch.float64 if case == "float64_x" else torch.float32)
    if case == "float32_weight":
        weight = weight.float()
    if case == "int32_table":
        tid2eid = tid2eid.int()
    args = (x, weight, bias, tid2eid, token_ids, "sqrtsoftplus", 2, 1.5)
    twin, calls = ref_moe_gate.moe_gate, []
    expected = twin(*args)
    monkeypatch.setattr(ref_moe_gate, "moe_gate", lambda *a: calls.append(a) or twin(*a))
    got = cpu_moe_gate.moe_gate(*args)
    assert len(calls) == 1, "kernels.cpu.moe_gate did not fall back to its twin"
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
