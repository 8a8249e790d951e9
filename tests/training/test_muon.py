"""Muon's hybrid Newton-Schulz against an SVD's polar factor, its step on a least-squares problem, and the recipe's
split of a DeepSeek-V4's parameters between Muon and AdamW."""

from __future__ import annotations

import pytest
import torch
from small_config import SMALL

from model_worker.model import DeepseekV4
from training.muon import FAST, SCHEDULE, Muon, adamw_parameter, optimizers, orthogonalize


@pytest.mark.parametrize("shape", [(64, 256), (256, 64), (3, 128, 96), (24, 1024)])
def test_hybrid_newton_schulz_gives_the_polar_factor(shape) -> None:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    u, _, vh = torch.linalg.svd(x, full_matrices=False)
    polar = u @ vh
    got = orthogonalize(x)
    error = torch.linalg.matrix_norm(got - polar) / torch.linalg.matrix_norm(polar)
    assert float(error.max()) < 2e-3
    singular = torch.linalg.svdvals(got)
    assert float((singular - 1).abs().max()) < 2e-3
    # the eight fast iterations alone leave the singular values spread: the two settling ones matter
    fast_only = torch.linalg.svdvals(orthogonalize(x, (FAST,) * len(SCHEDULE)))
    assert float((fast_only - 1).abs().max()) > 0.1
    # what Muon runs: the products in bf16, the direction still the polar factor's
    in_bf16 = orthogonalize(x, dtype=torch.bfloat16)
    assert in_bf16.dtype == torch.float32
    assert float((torch.linalg.matrix_norm(in_bf16 - polar) / torch.linalg.matrix_norm(polar)).max()) < 0.05


def test_a_step_moves_by_the_target_rms_and_lowers_a_least_squares_loss() -> None:
    gen = torch.Generator().manual_seed(0)
    target, inputs = torch.randn(32, 48, generator=gen), torch.randn(48, 256, generator=gen)
    weight = torch.nn.Parameter(torch.zeros(32, 48))
    optimizer = Muon([weight], lr=0.1, weight_decay=0.0)
    losses = []
    for step in range(60):
        loss = ((weight @ inputs - target @ inputs) ** 2).mean()
        losses.append(float(loss.detach()))
        optimizer.zero_grad()
        loss.backward()
        before = weight.detach().clone()
        optimizer.step()
        if step == 0:
            rms = float(((weight.detach() - before) / 0.1).pow(2).mean().sqrt())
            assert rms == pytest.approx(0.18, rel=0.01)
    assert losses[-1] < 0.1 * losses[0]


def test_the_recipe_splits_the_parameters() -> None:
    model = DeepseekV4(SMALL, quantized=False).to_empty(device="cpu")
    muon, adamw = optimizers(model, lr=1e-3)
    assert all(p.requires_grad for group in muon.param_groups + adamw.param_groups for p in group["params"])
    names = {id(p): n for n, p in model.named_parameters()}
    to_adamw = {names[id(p)] for group in adamw.param_groups for p in group["params"]}
    to_muon = {names[id(p)] for group in muon.param_groups for p in group["params"]}
    assert {"embed.weight", "head.weight", "norm.weight", "hc_head_base", "hc_head_scale",
            "layers.0.attn.attn_sink", "layers.0.hc_attn_base"} <= to_adamw
    assert {"layers.0.attn.wq_a.weight", "layers.0.hc_attn_fn", "layers.0.ffn.experts.w13"} <= to_muon
    trained = [(n, p) for n, p in model.named_parameters() if p.is_floating_point() and not n.endswith("gate.bias")]
    # every float parameter once; not the hash tables (integers) nor the selection biases (moved by load)
    assert len(to_adamw) + len(to_muon) == len(trained)
    assert all(adamw_parameter(n, p) == (n in to_adamw) for n, p in trained)
