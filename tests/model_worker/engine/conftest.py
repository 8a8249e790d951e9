"""Fixtures of the engine tests: the small real model (random weights) and the tokenizer, and a fresh fake model
runner per test (engine_testlib.py) for the scheduler's logic without a model."""

from __future__ import annotations

import pytest
from engine_testlib import FakeRunner
from small_config import SMALL

from foundation.chat import load_tokenizer
from model_worker.checkpoint.random_init import random_state_dict
from model_worker.model import DeepseekV4
from model_worker.numerics import REFERENCE


@pytest.fixture(scope="session")
def model() -> DeepseekV4:
    model = DeepseekV4(SMALL, quantized=True, numerics=REFERENCE)
    model.load_state_dict(random_state_dict(model, 7), assign=True, strict=True)
    return model


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer()


@pytest.fixture
def fake() -> FakeRunner:
    return FakeRunner()
