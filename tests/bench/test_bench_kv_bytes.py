"""bench.kv_bytes: the allocation-free byte count equals a real SequenceState's nbytes() at page boundaries and edge
token counts, and the official growth per token for Flash/Pro equals the reference doc's §3 table."""

from __future__ import annotations

import pytest
import torch
from small_config import SMALL as BASE

from bench.kv_bytes import DOC_GROWTH_FP4, MODELS, computed_state_bytes, doc_formula_bytes, growth_per_token
from model_worker.checkpoint.random_init import random_state_dict
from model_worker.config import ModelConfig
from model_worker.model import DeepseekV4, ForwardBatch
from model_worker.numerics import OFFICIAL, REFERENCE, Numerics
from model_worker.state import StateLayout

# Every layer kind with tiny ratios so page boundaries come early (few tokens keep the test fast): CSA m=2 (a 64-entry
# page = 128 tokens), HCA m'=4 (a page = 256 tokens), window 8, MTP. The second variant has no MTP layer nor hidden row.
SMALL = BASE.replace(compress_ratios=(0, 2, 4, 2, 0), csa_ratio=2)
NO_MTP = SMALL.replace(n_mtp_layers=0, compress_ratios=(0, 2, 4, 2))
# 0, 1, group and window edges, then both sides of the CSA (128) and HCA (256) page boundaries.
CHECKPOINTS = [0, 1, 2, 3, 4, 5, 7, 8, 9, 127, 128, 129, 255, 256, 257]


def build(config: ModelConfig, numerics: Numerics) -> DeepseekV4:
    # Dense weights build faster; the weight format does not touch the state, only numerics (the layout) does.
    model = DeepseekV4(config, quantized=False, numerics=numerics)
    model.load_state_dict(random_state_dict(model, 0), assign=True, strict=True)
    return model


@pytest.mark.parametrize("config, numerics, checkpoints, drafting",
                         [(SMALL, OFFICIAL, CHECKPOINTS, True), (SMALL, REFERENCE, CHECKPOINTS, False),
                          (NO_MTP, OFFICIAL, [0, 1, 3, 9], False)],
                         ids=["small-official-drafting", "small-reference", "no-mtp-official"])
def test_computed_bytes_equal_real_state(config: ModelConfig, numerics: Numerics, checkpoints: list[int],
                                         drafting: bool) -> None:
    model = build(config, numerics)
    state = model.new_state()
    ids = torch.randint(0, config.vocab_size, (checkpoints[-1],))
    done = 0
    for target in checkpoints:
        if target > done:
            model(ForwardBatch.single(ids[done:target], state, logits="none", draft_logits=drafting))
            state.commit()
            done = target
        assert computed_state_bytes(model.layout, target, drafting) == state.nbytes(), f"at {target} tokens"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_official_growth_matches_doc_table(name: str) -> None:
    layout = StateLayout(MODELS[name], OFFICIAL)
    growth = growth_per_token(layout)
    assert round(growth["total"]) == DOC_GROWTH_FP4[name]
    # 584-B entries + 68-B FP4 index keys per 4 tokens; 584 B per 128 tokens.
    assert growth["csa"] == (584 + 68) / 4 and growth["hca"] == 584 / 128 and growth["window"] == 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_session_bytes_close_to_doc_formula_at_1m(name: str) -> None:
    for numerics in (REFERENCE, OFFICIAL):
        layout = StateLayout(MODELS[name], numerics)
        ours, doc = computed_state_bytes(layout, 1 << 20)["total"], doc_formula_bytes(layout, 1 << 20)
        assert 0 < ours - doc < 0.02 * doc
