"""One copy of the weights: loaded parameters are views of the memory-mapped shards, except routed experts stored
one tensor per expert, which are copied once into their stacked parameter; resident memory grows by about the
checkpoint's size, not twice it."""

from __future__ import annotations

import ctypes
import gc
import math
import sys
from pathlib import Path

import pytest
import torch
from small_config import SMALL

from model_worker.checkpoint import load_checkpoint, write_random_checkpoint, write_state_dict
from model_worker.checkpoint.layouts import HF_NATIVE, expert_param, layout_config
from model_worker.checkpoint.random_init import random_state_dict
from model_worker.model import DeepseekV4


def _storages(model: DeepseekV4, shard_sizes: set[int]) -> tuple[int, int]:
    """(bytes of parameters viewing a whole mapped shard, bytes of parameters with their own storage)."""
    mapped = owned = 0
    for name, param in model.named_parameters():
        nbytes = param.numel() * param.element_size()
        storage = param.untyped_storage().nbytes()
        if expert_param(name) is not None and storage == nbytes:
            owned += nbytes
        else:
            assert storage in shard_sizes, f"{name} is neither a view of a shard nor a stacked expert"
            mapped += nbytes
    return mapped, owned


@pytest.mark.parametrize("fixture", ["official_dir", "dequantized_hf_dir"])
def test_parameters_view_the_mapped_shards(fixture: str, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(fixture)
    model, info = load_checkpoint(path, fingerprint=False)
    mapped, owned = _storages(model, {(path / shard).stat().st_size for shard in info.shards})
    expert_bytes = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if expert_param(n))
    assert owned == expert_bytes and mapped + owned < info.total_bytes


def test_native_hf_names_load_without_any_copy(tmp_path: Path) -> None:
    dense = random_state_dict(DeepseekV4(layout_config(SMALL, "hf"), quantized=False), 2, float_dtype=torch.float32)
    path = write_state_dict(dense, SMALL, tmp_path / "native", "hf", hf_naming=HF_NATIVE)
    model, info = load_checkpoint(path, fingerprint=False)
    shard_sizes = {(path / shard).stat().st_size for shard in info.shards}
    assert all(p.untyped_storage().nbytes() in shard_sizes for p in model.parameters())


def _rss() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status and calls glibc")
def test_resident_memory_grows_by_one_copy(tmp_path: Path) -> None:
    path = write_random_checkpoint(SMALL.replace(vocab_size=32768), "hf", seed=1, out_dir=tmp_path / "big")
    checkpoint_bytes = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap from writing would otherwise hide new allocations
    before = _rss()
    model, _ = load_checkpoint(path, fingerprint=False)
    loaded = _rss()
    touched = sum(float(p.float().sum()) for p in model.parameters())  # fault every weight page in
    after = _rss()
    assert math.isfinite(touched), "weights must be readable"
    expert_bytes = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if expert_param(n))
    assert loaded["RssAnon"] - before["RssAnon"] <= expert_bytes + (4 << 20)
    growth = after["RssAnon"] + after["RssFile"] - before["RssAnon"] - before["RssFile"]
    assert growth <= 1.3 * checkpoint_bytes, (growth, checkpoint_bytes)
