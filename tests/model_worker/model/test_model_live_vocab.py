"""A model trained on part of the vocabulary (agent-small) is served with the head's live rows only: the logits and
the MTP drafts are the whole head's, the skipped ids' exactly 0; a model with a whole vocabulary keeps its head."""

from __future__ import annotations

import pytest
import torch
from small_config import SMALL

from model_worker.checkpoint.random_init import random_state_dict
from model_worker.model import DeepseekV4, ForwardBatch
from model_worker.numerics import OFFICIAL, REFERENCE


def build(numerics, live: torch.Tensor | None) -> DeepseekV4:
    model = DeepseekV4(SMALL, quantized=True, numerics=numerics)
    weights = random_state_dict(model, 0)
    if live is not None:
        dead = torch.ones(SMALL.vocab_size, dtype=torch.bool)
        dead[live] = False
        weights["head.weight"][dead] = 0
        weights["embed.weight"][dead] = 0
    model.load_state_dict(weights, assign=True, strict=True)
    return model


@pytest.mark.parametrize("numerics", [REFERENCE, OFFICIAL], ids=["reference", "official"])
def test_the_live_rows_give_the_whole_heads_logits(numerics) -> None:
    live = torch.randperm(SMALL.vocab_size, generator=torch.Generator().manual_seed(0))[: SMALL.vocab_size // 10]
    whole, skipping = build(numerics, live), build(numerics, live)
    assert skipping.skip_zero_vocab_rows() == SMALL.vocab_size - len(live)
    assert "live" not in "".join(name for name, _ in skipping.named_parameters())  # no second copy in the weights
    ids = live[torch.randint(0, len(live), (40,), generator=torch.Generator().manual_seed(1))]
    with torch.no_grad():
        outputs = [model(ForwardBatch.single(ids, model.new_state(), logits="all", draft_logits=True))
                   for model in (whole, skipping)]
    for expected, got in ((outputs[0].logits, outputs[1].logits), (outputs[0].mtp_logits, outputs[1].mtp_logits)):
        assert got.shape == expected.shape and got.dtype == expected.dtype
        assert torch.equal(got[:, expected.abs().sum(0) == 0], expected[:, expected.abs().sum(0) == 0])
        torch.testing.assert_close(got.float(), expected.float(), rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
        assert torch.equal(got.argmax(-1), expected.argmax(-1))


def test_a_whole_vocabulary_keeps_its_head() -> None:
    model = build(REFERENCE, None)
    assert model.skip_zero_vocab_rows() == 0 and model.live_vocab is None
