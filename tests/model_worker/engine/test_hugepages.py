"""The output head moves to huge-page-advised memory on CPU with its values unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model_worker.checkpoint.random_init import random_state_dict
from model_worker.config import load_config
from model_worker.engine import hugepages
from model_worker.engine.loading import load_model
from model_worker.model import DeepseekV4


def _vm_flags(address: int) -> list[str]:
    """The VmFlags of the mapping holding `address` (from /proc/self/smaps)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and all(c in "0123456789abcdef-" for c in head):
            low, high = (int(v, 16) for v in head.split("-"))
            inside = low <= address < high
        elif inside and line.startswith("VmFlags:"):
            return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


def test_on_huge_pages_copies_into_an_aligned_advised_mapping() -> None:
    if not hugepages.available():
        pytest.skip("transparent huge pages are off on this machine")
    tensor = torch.randn(3000, 1000).to(torch.bfloat16)
    moved = hugepages.on_huge_pages(tensor)
    assert torch.equal(moved, tensor) and moved.dtype == tensor.dtype and moved.shape == tensor.shape
    assert moved.data_ptr() % hugepages.HUGE_PAGE == 0
    assert "hg" in _vm_flags(moved.data_ptr())  # MADV_HUGEPAGE


def test_load_model_puts_the_head_there_unchanged() -> None:
    model = load_model(None, "tiny")
    drawn = random_state_dict(DeepseekV4(load_config("tiny"), quantized=True), seed=0)
    assert torch.equal(model.head.weight, drawn["head.weight"])
    if hugepages.available():
        assert model.head.weight.data_ptr() % hugepages.HUGE_PAGE == 0
