"""Write weights in either checkpoint layout: "official" (the DeepSeek snapshot: FP8 + F8_E8M0 scales, I8-packed FP4
experts one tensor per expert, MTP, `config.json` + `inference/config.json`) or "hf" (what transformers'
`DeepseekV4ForCausalLM.save_pretrained` writes: dense weights, no MTP, `config.json` from `to_hf_dict`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from kernels.ref.formats import dequantize_fp4, dequantize_fp8_blocks, quantize_fp4, quantize_fp8_blocks
from model_worker.checkpoint.checkpoint_dir import INDEX_FILE, INFERENCE_CONFIG, ROOT_CONFIG
from model_worker.checkpoint.errors import CheckpointError
from model_worker.checkpoint.layouts import (
    HF,
    HF_NATIVE,
    HF_SAVED,
    LAYOUTS,
    OFFICIAL,
    allowed_dtypes,
    expert_param,
    layout_config,
    plan,
)
from model_worker.checkpoint.random_init import random_state_dict
from model_worker.checkpoint.safetensors_io import dtype_name, write_safetensors
from model_worker.config import ModelConfig, to_hf_dict
from model_worker.model import DeepseekV4

_QUANTIZATION_CONFIG = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "scale_fmt": "ue8m0",
                        "weight_block_size": [128, 128]}


def write_random_checkpoint(config: ModelConfig, fmt: str, seed: int, out_dir: str | Path, num_shards: int = 2,
                            float_dtype: torch.dtype | None = None) -> Path:
    """Random weights (`random_state_dict`) for `config` written in layout `fmt`. For "hf", floats are stored as
    `float_dtype` (default float32); "official" stores each tensor in its official dtype."""
    if fmt == OFFICIAL and float_dtype is not None:
        raise CheckpointError("the official layout fixes every dtype; float_dtype applies to the hf layout only")
    model = DeepseekV4(layout_config(config, fmt), quantized=fmt == OFFICIAL)
    state_dict = random_state_dict(model, seed, float_dtype=(float_dtype or torch.float32) if fmt == HF else None)
    return write_state_dict(state_dict, config, out_dir, fmt, num_shards=num_shards)


def write_state_dict(state_dict: Mapping[str, torch.Tensor], config: ModelConfig, out_dir: str | Path, fmt: str,
                     num_shards: int = 2, float_dtype: torch.dtype | None = None, hf_naming: str = HF_SAVED) -> Path:
    """Write `state_dict` (our parameter names: official names with stacked experts) as a checkpoint of layout
    `fmt` in the new or empty directory `out_dir`. "official" needs quantized weights (see `random_state_dict`);
    "hf" needs dense ones (`dequantize_state_dict`) and drops `mtp.*`. `hf_naming` "hf-native" writes the
    transformers module names instead of what `save_pretrained` writes; both load in transformers."""
    if fmt not in LAYOUTS:
        raise CheckpointError(f"unknown checkpoint format {fmt!r}; choose one of {list(LAYOUTS)}")
    if fmt == HF and hf_naming not in (HF_SAVED, HF_NATIVE):
        raise CheckpointError(f"unknown hf naming {hf_naming!r}; choose {HF_SAVED!r} or {HF_NATIVE!r}")
    if num_shards < 1:
        raise CheckpointError("num_shards must be >= 1")
    files = _file_tensors(state_dict, config, fmt, float_dtype, hf_naming if fmt == HF else OFFICIAL)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stale = sorted(p.name for p in out.iterdir() if p.name.endswith(".safetensors") or p.name == INDEX_FILE)
    if stale:
        raise CheckpointError(f"{out}: already holds checkpoint files {stale[:3]}; write into an empty directory")
    _write_shards(out, files, num_shards, fmt)
    _write_configs(out, config, fmt, files)
    return out


def dequantize_state_dict(
    state_dict: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Quantized weights (FP8 + block scales, packed FP4 experts + scales) -> dense `dtype` weights without scales,
    i.e. exactly the values a quantized model multiplies by. Other tensors are returned unchanged."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        if _is_scale(name, state_dict):
            continue
        scale = state_dict.get(name[: -len(".weight")] + ".scale") if name.endswith(".weight") else None
        if expert_param(name) is not None and tensor.dtype == torch.uint8:
            out[name] = dequantize_fp4(tensor, state_dict[f"{name}_scale"]).to(dtype)
        elif scale is not None:
            out[name] = dequantize_fp8_blocks(tensor, scale).to(dtype)
        else:
            out[name] = tensor
    return out


def quantize_state_dict(state_dict: Mapping[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Dense float weights (our names) -> what the official layout stores, the inverse of `dequantize_state_dict` up
    to rounding: FP8 e4m3 + 128x128 ue8m0 scales for every weight the quantized model scales, routed experts packed
    FP4 e2m1 + a ue8m0 scale per 32, every other tensor in its official dtype. Training's QAT rounds through this."""
    official = dict(DeepseekV4(layout_config(config, OFFICIAL), quantized=True).named_parameters())
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        out.update(quantize_tensor(name, tensor, official))
    return out


def quantize_tensor(name: str, tensor: torch.Tensor, official: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One dense tensor -> its official tensors (`official`: a quantized model's parameters, on meta)."""
    param = official[name]
    if param.dtype == torch.uint8 and expert_param(name) is not None:
        packed, scale = quantize_fp4(tensor.detach().reshape(-1, tensor.shape[-1]))
        return {name: packed.view(param.shape), f"{name}_scale": scale.view(*param.shape[:2], -1)}
    if name.endswith(".weight") and name[: -len(".weight")] + ".scale" in official:
        weight, scale = quantize_fp8_blocks(tensor.detach())
        return {name: weight, name[: -len(".weight")] + ".scale": scale}
    return {name: tensor.detach().to(param.dtype)}


def _is_scale(name: str, state_dict: Mapping[str, torch.Tensor]) -> bool:
    if name.endswith(".scale"):
        return name[: -len(".scale")] + ".weight" in state_dict
    return name.endswith("_scale") and expert_param(name) is not None


def _file_tensors(state_dict: Mapping[str, torch.Tensor], config: ModelConfig, fmt: str,
                  float_dtype: torch.dtype | None, naming: str) -> dict[str, tuple[torch.Tensor, str]]:
    """Checkpoint key -> (tensor, safetensors dtype), in module order so shards split between layers."""
    model = DeepseekV4(layout_config(config, fmt), quantized=fmt == OFFICIAL)
    params = dict(model.named_parameters())
    given = {k: v for k, v in state_dict.items() if not (fmt == HF and k.startswith("mtp."))}
    missing, extra = sorted(set(params) - set(given)), sorted(set(given) - set(params))
    if missing or extra:
        hint = " (dequantize_state_dict first?)" if fmt == HF and any(k.endswith("scale") for k in extra) else ""
        raise CheckpointError(f"state dict does not fit a {fmt}-layout model{hint}: missing {missing[:5]}, "
                              f"unexpected {extra[:5]}")
    files: dict[str, tuple[torch.Tensor, str]] = {}
    for source in plan(params, naming, config.n_routed_experts):
        param, tensor = params[source.param], given[source.param]
        if tuple(tensor.shape) != tuple(param.shape):
            raise CheckpointError(f"{source.param}: shape {list(tensor.shape)}, expected {list(param.shape)}")
        if fmt == HF and float_dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(float_dtype)
        file_dtype = _file_dtype(source.param, param, tensor, fmt)
        if not source.stacked:
            files[source.keys[0][0]] = (tensor, file_dtype)
            continue
        for slot, keys in enumerate(source.keys):
            for key, part in zip(keys, tensor[slot].chunk(len(keys), dim=0), strict=True):
                files[key] = (part, file_dtype)
    return files


def _file_dtype(name: str, param: torch.Tensor, tensor: torch.Tensor, fmt: str) -> str:
    allowed = allowed_dtypes(name, param.dtype, fmt)
    if fmt == OFFICIAL and tensor.dtype != param.dtype:
        raise CheckpointError(f"{name}: dtype {tensor.dtype}, the official layout stores {param.dtype} "
                              f"({' or '.join(allowed)})")
    stored = allowed[0] if tensor.dtype == torch.uint8 and allowed else dtype_name(tensor.dtype)
    if stored not in allowed:
        raise CheckpointError(f"{name}: dtype {tensor.dtype} cannot be stored in the {fmt} layout")
    return stored


def _write_shards(out: Path, files: dict[str, tuple[torch.Tensor, str]], num_shards: int, fmt: str) -> None:
    sizes = {key: t.numel() * t.element_size() for key, (t, _) in files.items()}
    total = sum(sizes.values())
    groups: list[list[str]] = [[] for _ in range(num_shards)]
    running = 0
    for key, size in sizes.items():
        # Balanced by bytes, each shard a contiguous run of module order (MTP ends up in the last shard).
        groups[min(num_shards - 1, running * num_shards // max(total, 1))].append(key)
        running += size
    groups = [g for g in groups if g]
    if len(groups) == 1:
        write_safetensors(out / "model.safetensors", {k: files[k][0] for k in groups[0]},
                          {k: files[k][1] for k in groups[0]})
        return
    weight_map = {}
    for i, group in enumerate(groups):
        shard = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        write_safetensors(out / shard, {k: files[k][0] for k in group}, {k: files[k][1] for k in group})
        weight_map.update({k: shard for k in group})
    metadata: dict[str, Any] = {"total_size": total}
    if fmt == HF:
        metadata["total_parameters"] = sum(files[k][0].numel() for k in files)
    _write_json(out / INDEX_FILE, {"metadata": metadata, "weight_map": dict(sorted(weight_map.items()))})


def _write_configs(out: Path, config: ModelConfig, fmt: str, files: dict[str, tuple[torch.Tensor, str]]) -> None:
    root = to_hf_dict(config)
    if fmt == OFFICIAL:
        # The snapshot's root config also keeps the pre-transformers keys (converters such as llama.cpp's read them).
        root.update(quantization_config=_QUANTIZATION_CONFIG, torch_dtype="bfloat16",
                    compress_ratios=list(config.compress_ratios), num_hash_layers=config.n_hash_layers,
                    qk_rope_head_dim=config.rope_head_dim, norm_topk_prob=True, topk_method="noaux_tc",
                    hidden_act="silu")
        _write_json(out / ROOT_CONFIG, root)
        (out / INFERENCE_CONFIG).parent.mkdir(exist_ok=True)
        _write_json(out / INFERENCE_CONFIG, config.to_official_dict())
        return
    embed = next(t for key, (t, _) in files.items() if key.endswith("embed_tokens.weight"))
    root["dtype"] = str(embed.dtype).removeprefix("torch.")
    _write_json(out / ROOT_CONFIG, root)
    _write_json(out / "generation_config.json", {"bos_token_id": config.bos_token_id,
                                                  "eos_token_id": config.eos_token_id, "use_cache": True})


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

