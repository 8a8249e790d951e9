"""Round trips: weights written in either layout load into a model that computes exactly what the model built
straight from the same state dict computes; official FP8/FP4 weights and their dequantized transformers-layout
copy give the same logits."""

from __future__ import annotations

from pathlib import Path

import torch
from checkpoint_testlib import copy_checkpoint, logits, rel_err
from small_config import SMALL

from model_worker.checkpoint import (
    load_checkpoint,
    resident_bytes_per_expert_param,
    write_random_checkpoint,
    write_state_dict,
)
from model_worker.checkpoint.layouts import layout_config
from model_worker.checkpoint.random_init import random_state_dict
from model_worker.checkpoint.safetensors_io import SafetensorsFile
from model_worker.config import TINY, load_config
from model_worker.model import DeepseekV4
from model_worker.numerics import OFFICIAL, REFERENCE

IDS = torch.randint(0, SMALL.vocab_size, (24,), generator=torch.Generator().manual_seed(3))


def test_official_round_trip_matches_direct_model(official_dir: Path, direct_model: DeepseekV4) -> None:
    model, info = load_checkpoint(official_dir, numerics=REFERENCE, fingerprint=False)
    assert (info.layout, info.naming, info.config_source) == ("official", "official", "inference/config.json")
    assert info.config == SMALL and len(info.shards) == 3
    loaded, loaded_mtp = logits(model, IDS, draft=True)
    direct, direct_mtp = logits(direct_model, IDS, draft=True)
    assert torch.equal(loaded, direct)
    # Same weights bit for bit, but memory-mapped tensors are not 64-byte aligned, so BLAS may take another kernel
    # for some shapes (here the MTP layer's 8-row catch-up): equal up to float32 rounding.
    torch.testing.assert_close(loaded_mtp, direct_mtp, rtol=1e-6, atol=1e-6)


def test_official_layout_file_dtypes_and_names(official_dir: Path) -> None:
    entries = {}
    for path in official_dir.glob("*.safetensors"):
        entries.update(SafetensorsFile(path).entries)
    dtypes = {e.dtype for e in entries.values()}
    assert dtypes == {"BF16", "F32", "F8_E4M3", "F8_E8M0", "I8", "I64"}
    expert = entries["layers.2.ffn.experts.5.w1.weight"]
    assert (expert.dtype, expert.shape) == ("I8", (SMALL.moe_inter_dim, SMALL.dim // 2))
    assert entries["layers.2.ffn.experts.5.w2.scale"].shape == (SMALL.dim, SMALL.moe_inter_dim // 32)
    assert entries["layers.0.attn.wq_b.scale"].dtype == "F8_E8M0"
    assert entries["layers.0.ffn.gate.tid2eid"].dtype == "I64" and "layers.1.ffn.gate.bias" in entries
    assert any(k.startswith("mtp.0.") for k in entries) and not any(".experts.w13" in k for k in entries)
    # The root config.json (transformers names + quantization_config) describes the same model.
    assert load_config(official_dir / "config.json") == SMALL


def test_official_numerics_load_matches_direct(official_dir: Path, quantized_state: dict) -> None:
    model, _ = load_checkpoint(official_dir, fingerprint=False)
    direct = DeepseekV4(SMALL, quantized=True, numerics=OFFICIAL)
    direct.load_state_dict(quantized_state, assign=True, strict=True)
    loaded = logits(model, IDS)[0]
    assert torch.isfinite(loaded).all() and torch.equal(loaded, logits(direct, IDS)[0])


def test_official_and_dequantized_hf_agree(official_dir: Path, dequantized_hf_dir: Path) -> None:
    official, _ = load_checkpoint(official_dir, numerics=REFERENCE, fingerprint=False)
    dense, info = load_checkpoint(dequantized_hf_dir, numerics=REFERENCE, fingerprint=False)
    assert info.layout == "hf" and info.config == layout_config(SMALL, "hf")
    assert rel_err(logits(dense, IDS)[0], logits(official, IDS)[0]).max() <= 1e-5


def test_hf_bf16_round_trip_matches_direct_model(tmp_path: Path) -> None:
    out = write_random_checkpoint(SMALL, "hf", seed=4, out_dir=tmp_path / "hf", num_shards=1,
                                  float_dtype=torch.bfloat16)
    assert (out / "model.safetensors").exists() and not (out / "model.safetensors.index.json").exists()
    model, _ = load_checkpoint(out, numerics=REFERENCE, fingerprint=False)
    assert model.embed.weight.dtype == torch.bfloat16 and len(model.mtp) == 0
    direct = DeepseekV4(layout_config(SMALL, "hf"), quantized=False, numerics=REFERENCE)
    direct.load_state_dict(random_state_dict(direct, 4, float_dtype=torch.bfloat16), assign=True, strict=True)
    assert torch.equal(logits(model, IDS)[0], logits(direct, IDS)[0])


def test_resident_bytes_per_expert_param(official_dir: Path, dequantized_hf_dir: Path) -> None:
    assert resident_bytes_per_expert_param(DeepseekV4(TINY, quantized=True)) <= 0.54
    assert resident_bytes_per_expert_param(DeepseekV4(TINY, quantized=True)) == 0.5 + 1 / 32
    official, _ = load_checkpoint(official_dir, fingerprint=False)
    assert resident_bytes_per_expert_param(official) == 0.5 + 1 / 32
    dense, _ = load_checkpoint(dequantized_hf_dir, fingerprint=False)
    assert resident_bytes_per_expert_param(dense) == 4.0


def test_write_state_dict_round_trips_tensors(official_dir: Path, quantized_state: dict, tmp_path: Path) -> None:
    model, _ = load_checkpoint(official_dir, fingerprint=False)
    loaded = {name: p for name, p in model.named_parameters()}
    assert loaded.keys() == quantized_state.keys()
    for name, tensor in quantized_state.items():
        assert loaded[name].dtype == tensor.dtype, name
        assert torch.equal(loaded[name].view(torch.uint8), tensor.view(torch.uint8)), name
    again = write_state_dict(loaded, SMALL, tmp_path / "again", "official", num_shards=3)
    for path in official_dir.glob("*.safetensors"):
        assert (again / path.name).read_bytes() == path.read_bytes()


def test_official_root_config_alone_is_enough(official_dir: Path, tmp_path: Path) -> None:
    path = copy_checkpoint(official_dir, tmp_path / "ckpt")
    (path / "inference" / "config.json").unlink()
    _, info = load_checkpoint(path, fingerprint=False)
    assert info.config_source == "config.json" and info.config == SMALL
