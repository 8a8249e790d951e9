"""Build a ready model: from a checkpoint directory, or random weights for a named config (the embedded default)."""

from __future__ import annotations

import hashlib
import json

import torch

from model_worker.config import ModelConfig, load_config
from model_worker.engine.hugepages import move_weight_to_huge_pages
from model_worker.model import DeepseekV4
from model_worker.numerics import get_numerics
from model_worker.parallel import SINGLE, TensorParallel
from model_worker.parallel.shard import shard_state_dict


def load_model(checkpoint: str | None, config: str = "tiny", seed: int = 0, numerics: str = "official",
               device: str = "cpu", tp: TensorParallel = SINGLE) -> DeepseekV4:
    """The model (this rank's share of it under tensor parallelism), with `model.fingerprint` naming its weights
    (what stored sessions are tied to: the same at any parallel size)."""
    if checkpoint:
        from model_worker.checkpoint.loader import load_checkpoint

        model, info = load_checkpoint(checkpoint, numerics=get_numerics(numerics), device=device, tp=tp)
        model.fingerprint = info.fingerprint
        return _placed(model)
    from model_worker.checkpoint.random_init import random_state_dict

    model_config, fingerprint = model_identity(None, config, seed)
    weights = random_state_dict(DeepseekV4(model_config, quantized=True, numerics=get_numerics(numerics)), seed)
    # Random weights are drawn whole and then split (small configs only; checkpoints load per rank).
    model = DeepseekV4(model_config, quantized=True, numerics=get_numerics(numerics), tp=tp)
    model.load_state_dict(shard_state_dict(weights, tp), assign=True, strict=True)
    model.fingerprint = fingerprint
    return _placed(model.to(torch.device(device)))


def _placed(model: DeepseekV4) -> DeepseekV4:
    model.skip_zero_vocab_rows()
    move_weight_to_huge_pages(model.head if model.live_vocab is None else model.live_vocab[1])  # read every step
    return model


def model_identity(checkpoint: str | None, config: str = "tiny", seed: int = 0) -> tuple[ModelConfig, str]:
    """(config, fingerprint) of the weights load_model would load, without loading them."""
    if checkpoint:
        from model_worker.checkpoint.checkpoint_dir import open_checkpoint_dir
        from model_worker.checkpoint.fingerprint import model_fingerprint

        ckpt = open_checkpoint_dir(checkpoint)
        return ckpt.config, model_fingerprint(ckpt)
    model_config = load_config(config)
    # Random weights are a function of the config and the seed, so those name them.
    canonical = json.dumps(model_config.to_official_dict(), sort_keys=True)
    return model_config, hashlib.sha256(f"random-init/1\0{seed}\0{canonical}".encode()).hexdigest()
