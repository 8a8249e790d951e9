"""Fixtures for the checkpoint tests: checkpoints of the SMALL config written once per session (drawing random
weights is the slow part); tests that damage one work on a copy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from checkpoint_testlib import TP_SMALL, one_thread, parameters
from small_config import SMALL

from model_worker.checkpoint import dequantize_state_dict, load_checkpoint, write_state_dict
from model_worker.checkpoint.random_init import random_state_dict
from model_worker.model import DeepseekV4
from model_worker.numerics import REFERENCE


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def quantized_state() -> dict[str, torch.Tensor]:
    """Random official-layout (FP8 / FP4, with MTP) weights for SMALL."""
    with one_thread():
        return random_state_dict(DeepseekV4(SMALL, quantized=True), seed=7)


@pytest.fixture(scope="session")
def official_dir(tmp_path_factory: pytest.TempPathFactory, quantized_state: dict) -> Path:
    return write_state_dict(quantized_state, SMALL, tmp_path_factory.mktemp("official"), "official", num_shards=3)


@pytest.fixture(scope="session")
def dequantized_hf_dir(tmp_path_factory: pytest.TempPathFactory, quantized_state: dict) -> Path:
    """The same weights dequantized to float32, in the transformers layout."""
    with one_thread():
        dense = dequantize_state_dict(quantized_state)
    return write_state_dict(dense, SMALL, tmp_path_factory.mktemp("hf"), "hf")


@pytest.fixture(scope="session")
def direct_model(quantized_state: dict) -> DeepseekV4:
    """The quantized model built straight from the state dict (no files), reference numerics."""
    model = DeepseekV4(SMALL, quantized=True, numerics=REFERENCE)
    model.load_state_dict(quantized_state, assign=True, strict=True)
    return model


@pytest.fixture(scope="session")
def tp_official_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random official-layout weights for TP_SMALL (splits over 2 and 4 ranks), in 3 shards."""
    with one_thread():
        state = random_state_dict(DeepseekV4(TP_SMALL, quantized=True), seed=5)
    return write_state_dict(state, TP_SMALL, tmp_path_factory.mktemp("tp_official"), "official", num_shards=3)


@pytest.fixture(scope="session")
def tp_full_state(tp_official_dir: Path) -> dict[str, torch.Tensor]:
    """Every parameter of TP_SMALL, loaded whole (tensor parallel size 1)."""
    return parameters(load_checkpoint(tp_official_dir, fingerprint=False)[0])
