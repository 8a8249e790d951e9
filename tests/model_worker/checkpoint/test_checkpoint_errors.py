"""Every way a checkpoint can be broken fails at load time with a CheckpointError naming the file or tensor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from checkpoint_testlib import copy_checkpoint
from small_config import SMALL

from model_worker.checkpoint import (
    CheckpointConfigError,
    CheckpointError,
    dequantize_state_dict,
    load_checkpoint,
    write_state_dict,
)
from model_worker.checkpoint.safetensors_io import SafetensorsFile, dtype_name, write_safetensors
from model_worker.config import ConfigError

INDEX = "model.safetensors.index.json"


@pytest.fixture
def broken(official_dir: Path, tmp_path: Path) -> Path:
    return copy_checkpoint(official_dir, tmp_path / "ckpt")


def _index(path: Path) -> dict:
    return json.loads((path / INDEX).read_text())


def _edit_shard(path: Path, key: str, new: torch.Tensor | None = None, dtype: str | None = None,
                add: str | None = None) -> None:
    """Rewrite the shard holding `key`: drop it (new None), replace it, or `add` another tensor next to it."""
    index = _index(path)
    shard = index["weight_map"][key]
    file = SafetensorsFile(path / shard)
    tensors = {k: file.tensor(k).clone() for k in file.entries}
    dtypes = {k: e.dtype for k, e in file.entries.items()}
    if add is not None:
        tensors[add], dtypes[add], index["weight_map"][add] = new, dtype or "F32", shard
    elif new is None:
        del tensors[key], dtypes[key], index["weight_map"][key]
    else:
        tensors[key], dtypes[key] = new, dtype or dtype_name(new.dtype)
    write_safetensors(path / shard, tensors, dtypes)
    (path / INDEX).write_text(json.dumps(index))


def _load_error(path: Path) -> str:
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path, fingerprint=False)
    return str(caught.value)


def test_missing_shard_file(broken: Path) -> None:
    (broken / "model-00002-of-00003.safetensors").unlink()
    message = _load_error(broken)
    assert "model-00002-of-00003.safetensors" in message and "missing" in message


@pytest.mark.parametrize("key", ["layers.2.attn.compressor.wkv.weight", "layers.1.ffn.experts.5.w3.scale"])
def test_missing_tensor(broken: Path, key: str) -> None:
    _edit_shard(broken, key)
    message = _load_error(broken)
    assert key in message and "missing" in message


def test_index_names_a_tensor_its_shard_lacks(broken: Path) -> None:
    index = _index(broken)
    index["weight_map"]["layers.0.attn.wq_a.weight"] = "model-00003-of-00003.safetensors"
    (broken / INDEX).write_text(json.dumps(index))
    message = _load_error(broken)
    assert "layers.0.attn.wq_a.weight" in message and "model-00003-of-00003.safetensors" in message


def test_wrong_shape(broken: Path) -> None:
    _edit_shard(broken, "layers.0.attn.wq_a.weight", torch.zeros(63, 128, dtype=torch.float8_e4m3fn))
    message = _load_error(broken)
    assert "layers.0.attn.wq_a.weight" in message and "[63, 128]" in message and "[64, 128]" in message


@pytest.mark.parametrize("key,tensor,expected", [
    ("layers.0.attn_norm.weight", torch.ones(128), "expected BF16"),
    ("layers.3.ffn.experts.0.w2.weight", torch.zeros(128, 32, dtype=torch.bfloat16), "expected I8 or U8"),
    ("layers.0.attn.wq_b.scale", torch.ones(4, 1), "expected F8_E8M0 or U8"),
])
def test_wrong_dtype(broken: Path, key: str, tensor: torch.Tensor, expected: str) -> None:
    _edit_shard(broken, key, tensor, dtype=None if tensor.dtype != torch.uint8 else "U8")
    message = _load_error(broken)
    assert key in message and expected in message


def test_unexpected_tensor(broken: Path) -> None:
    _edit_shard(broken, "layers.0.attn_norm.weight", torch.zeros(3), add="layers.0.attn.bogus.weight")
    message = _load_error(broken)
    assert "unexpected" in message and "layers.0.attn.bogus.weight" in message


def test_tensor_in_shard_but_not_in_index(broken: Path) -> None:
    _edit_shard(broken, "layers.0.attn_norm.weight", torch.zeros(3), add="stray")
    index = _index(broken)
    del index["weight_map"]["stray"]
    (broken / INDEX).write_text(json.dumps(index))
    assert "'stray'" in _load_error(broken)


def test_unknown_config_field(broken: Path) -> None:
    config_path = broken / "inference" / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "n_dense_experts": 3}))
    with pytest.raises(CheckpointConfigError) as caught:
        load_checkpoint(broken, fingerprint=False)
    assert isinstance(caught.value, ConfigError) and str(config_path) in str(caught.value)
    assert "n_dense_experts" in str(caught.value)


def test_truncated_shard(broken: Path) -> None:
    shard = broken / "model-00003-of-00003.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    message = _load_error(broken)
    assert "truncated" in message and shard.name in message


def test_truncated_header(broken: Path) -> None:
    shard = broken / "model-00001-of-00003.safetensors"
    shard.write_bytes(shard.read_bytes()[:50])
    assert "truncated" in _load_error(broken)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    assert "not a checkpoint directory" in _load_error(tmp_path / "absent")
    assert "no model.safetensors.index.json" in _load_error(tmp_path)
    write_safetensors(tmp_path / "model.safetensors", {"something.else": torch.zeros(2)})
    assert "cannot tell the layout" in _load_error(tmp_path)


def test_hf_checkpoint_mtp_tensors_are_ignored(dequantized_hf_dir: Path, tmp_path: Path) -> None:
    path = copy_checkpoint(dequantized_hf_dir, tmp_path / "hf")
    _edit_shard(path, "model.embed_tokens.weight", torch.zeros(4), add="mtp.0.enorm.weight")
    _, info = load_checkpoint(path, fingerprint=False)
    assert info.ignored == ("mtp.0.enorm.weight",)


def test_writer_rejects_mismatched_state_dicts(quantized_state: dict, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="dequantize_state_dict"):
        write_state_dict(quantized_state, SMALL, tmp_path / "a", "hf")
    with pytest.raises(CheckpointError, match="missing"):
        write_state_dict(dequantize_state_dict(quantized_state), SMALL, tmp_path / "b", "official")
    wrong = dict(quantized_state, **{"norm.weight": quantized_state["norm.weight"].float()})
    with pytest.raises(CheckpointError, match="norm.weight"):
        write_state_dict(wrong, SMALL, tmp_path / "c", "official")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        write_state_dict(quantized_state, SMALL, tmp_path / "d", "gguf")
    write_safetensors(tmp_path / "e.safetensors", {"x": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="empty directory"):
        write_state_dict(quantized_state, SMALL, tmp_path, "official")
