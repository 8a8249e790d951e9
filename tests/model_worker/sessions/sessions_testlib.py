"""What the session store tests share: a small real model (random weights) and feeding it token ids in chunks,
with or without committing them to a store."""

from __future__ import annotations

import torch
from small_config import SMALL

from model_worker.checkpoint.random_init import random_state_dict
from model_worker.model import DeepseekV4, ForwardBatch
from model_worker.numerics import REFERENCE

TOKENS = torch.randint(1, 500, (4200,), generator=torch.Generator().manual_seed(11)).tolist()


def small_model(numerics=REFERENCE) -> DeepseekV4:
    model = DeepseekV4(SMALL, quantized=True, numerics=numerics)
    model.load_state_dict(random_state_dict(model, 3), assign=True, strict=True)
    model.fingerprint = f"small-3-{numerics.name}"
    return model


def feed(model: DeepseekV4, session, token_ids: list[int], chunk: int = 300) -> torch.Tensor:
    """Prefill token_ids in chunks; the logits after the last one."""
    logits = None
    for start in range(0, len(token_ids), chunk):
        logits = model(ForwardBatch.single(token_ids[start : start + chunk], session.state)).logits[-1]
    return logits


def grow(model, store, session, token_ids: list[int], chunk: int = 300) -> None:
    for start in range(0, len(token_ids), chunk):
        feed(model, session, token_ids[start : start + chunk])
        store.commit(session, token_ids[start : start + chunk])
