"""Build a ready model: from a checkpoint directory, or random weights for a named config (the embedded default)."""

from __future__ import annotations

import torch

from model_worker.config import load_config
from model_worker.model import DeepseekV4
from model_worker.numerics import get_numerics


def load_model(checkpoint: str | None, config: str = "tiny", seed: int = 0, numerics: str = "official",
               device: str = "cpu") -> DeepseekV4:
    if checkpoint:
        from model_worker.checkpoint.loader import load_checkpoint

        model, _info = load_checkpoint(checkpoint, numerics=get_numerics(numerics), device=device)
        return model
    from model_worker.checkpoint.random_init import random_state_dict

    model = DeepseekV4(load_config(config), quantized=True, numerics=get_numerics(numerics))
    model.load_state_dict(random_state_dict(model, seed), assign=True, strict=True)
    return model.to(torch.device(device))
