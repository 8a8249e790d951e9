"""The training forward: the streaming engine's logits with gradients, to every parameter that learns by gradient,
and a few optimizer steps of the recipe lower the loss."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from small_config import SMALL

from model_worker.checkpoint.random_init import random_state_dict
from model_worker.model import DeepseekV4, ForwardBatch
from model_worker.numerics import REFERENCE
from training.forward import next_token_loss, training_forward, training_logits
from training.muon import optimizers
from training.vocab import VocabSubset

# Window 16 and HCA m' = 16, so that 160 tokens reach past the window into compressed entries of both kinds.
CONFIG = dataclasses.replace(SMALL, window_size=16, compress_ratios=(4, 16, 0, 16, 0), index_topk=5)


def trainable_model(seed: int) -> DeepseekV4:
    model = DeepseekV4(CONFIG, quantized=False, numerics=REFERENCE)
    model.load_state_dict(random_state_dict(model, seed, torch.float32), assign=True, strict=True)
    return model


def test_the_training_forward_gives_the_streaming_engines_logits() -> None:
    model = trainable_model(1)
    tokens = torch.randint(3, CONFIG.vocab_size, (2, 160), generator=torch.Generator().manual_seed(0))
    trained = training_logits(model, tokens)
    assert trained.requires_grad is False  # the weights are not trainable yet: nothing to differentiate
    for row in range(2):
        state, streamed = model.new_state(), []
        with torch.no_grad():
            for first in range(0, 160, 48):  # chunks, as the engine prefills
                streamed.append(model(ForwardBatch.single(tokens[row, first : first + 48], state, "all")).logits)
                state.commit()
        streamed = torch.cat(streamed).float()
        torch.testing.assert_close(trained[row], streamed, rtol=1e-5, atol=1e-5 * float(streamed.abs().max()))


def test_gradients_reach_every_parameter_that_learns_by_gradient() -> None:
    model = trainable_model(2)
    optimizers(model, lr=1e-3)  # makes the float parameters trainable
    tokens = torch.randint(3, CONFIG.vocab_size, (2, 96), generator=torch.Generator().manual_seed(1))
    next_token_loss(training_logits(model, tokens), tokens).backward()
    missing = {name for name, p in model.named_parameters() if p.requires_grad and p.grad is None}
    by_design = {n for n in missing if ".indexer." in n or n.endswith("gate.bias") or n.startswith("mtp.")}
    assert missing == by_design and by_design
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_a_few_steps_of_the_recipe_lower_the_loss() -> None:
    model = trainable_model(3)
    muon, adamw = optimizers(model, lr=2e-2, weight_decay=0.0)
    generator = torch.Generator().manual_seed(2)
    tokens = torch.randint(3, 60, (4, 48), generator=generator)  # a small vocabulary: learnable in a few steps
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, :8] = False
    losses = []
    for _ in range(12):
        loss = next_token_loss(training_logits(model, tokens), tokens, mask)
        losses.append(float(loss.detach()))
        muon.zero_grad()
        adamw.zero_grad()
        loss.backward()
        muon.step()
        adamw.step()
    assert losses[-1] < 0.5 * losses[0], losses


def test_the_compact_models_loss_is_the_full_vocabularys() -> None:
    full = trainable_model(4)
    vocab = VocabSubset(range(3, 400), CONFIG.vocab_size)
    with torch.no_grad():  # the shipped model: the unused ids' rows are exactly zero
        unused = torch.ones(CONFIG.vocab_size, dtype=torch.bool)
        unused[vocab.ids] = False
        full.embed.weight[unused] = 0
        full.head.weight[unused] = 0
    compact = trainable_model(4)
    compact.load_state_dict(full.state_dict())
    vocab.compact(compact)
    assert compact.embed.weight.shape == compact.head.weight.shape == (397, CONFIG.dim)
    for name, tensor in vocab.full_state_dict(compact).items():  # the rows scatter back to the full model
        assert torch.equal(tensor, full.state_dict()[name]), name
    optimizers(full, lr=1e-3)
    optimizers(compact, lr=1e-3)
    tokens = torch.randint(3, 400, (2, 64), generator=torch.Generator().manual_seed(3))
    columns = vocab.columns(tokens)
    logits = training_logits(compact, columns)
    assert logits.shape == (2, 64, 397)
    loss = next_token_loss(logits, columns, vocab=vocab)
    loss.backward()
    reference = next_token_loss(training_logits(full, tokens), tokens)
    reference.backward()
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-5)
    for name in ("head.weight", "embed.weight"):
        grad, full_grad = compact.get_parameter(name).grad, full.get_parameter(name).grad
        torch.testing.assert_close(grad, full_grad[vocab.ids], rtol=1e-4, atol=1e-4 * float(grad.abs().max()))
    # the full softmax would push the unused rows' logits down; in the compact model they do not exist (stay 0)
    assert float(full.head.weight.grad[400:].abs().max()) > 0
    with pytest.raises(ValueError, match="outside the used vocabulary"):
        vocab.columns(torch.tensor([500]))


def test_the_mtp_layer_trains_on_every_pair_and_drafts_as_the_engine_does() -> None:
    model = trainable_model(5)
    tokens = torch.randint(3, CONFIG.vocab_size, (1, 80), generator=torch.Generator().manual_seed(4))
    logits, mtp = training_forward(model, tokens)
    assert logits.shape == (1, 80, CONFIG.vocab_size) and mtp.shape == (1, 79, CONFIG.vocab_size)
    for end in (20, 80):  # the engine's draft after `end` fed tokens is the MTP row of pair end - 1
        state = model.new_state()
        with torch.no_grad():
            out = model(ForwardBatch.single(tokens[0, :end], state, draft_logits=True))
        torch.testing.assert_close(mtp[0, end - 2], out.mtp_logits[0].float(), rtol=1e-5,
                                   atol=1e-5 * float(mtp.detach().abs().max()))
    optimizers(model, lr=1e-3)
    _, mtp = training_forward(model, tokens)
    next_token_loss(mtp, tokens, ahead=2).backward()
    assert model.mtp[0].e_proj.weight.grad is not None and model.mtp[0].attn.wkv.weight.grad is not None
