"""Where each model parameter lives in a checkpoint, per naming scheme, and which file dtypes it may have.

Namings: "official" (our names; experts one tensor per expert and projection), "hf-saved" (what transformers
5.x `save_pretrained` writes: it reverts its rename map, so official-style names under `model.` with per-expert
tensors), "hf-native" (the module names of `DeepseekV4ForCausalLM`, stacked `gate_up_proj`/`down_proj`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

import torch

from model_worker.checkpoint.names import to_hf_name
from model_worker.config import ModelConfig
from model_worker.parallel import TensorParallel
from model_worker.parallel.shard import is_block_scale, local_range, split_dim

OFFICIAL, HF = "official", "hf"
LAYOUTS = (OFFICIAL, HF)
HF_SAVED, HF_NATIVE = "hf-saved", "hf-native"
_EXPERT_PARAMS = {"w13": ("w1", "w3"), "w2": ("w2",), "w13_scale": ("w1", "w3"), "w2_scale": ("w2",)}
_HF_SAVED_GLOBALS = {
    "embed.weight": "model.embed_tokens.weight", "head.weight": "head.weight", "norm.weight": "model.norm.weight",
    "hc_head_fn": "model.hc_head.hc_fn", "hc_head_base": "model.hc_head.hc_base",
    "hc_head_scale": "model.hc_head.hc_scale",
}
# Official file dtypes per in-memory dtype; uint8 holds both packed FP4 (I8 in files) and ue8m0 scales (F8_E8M0).
_OFFICIAL_DTYPES = {
    torch.float8_e4m3fn: ("F8_E4M3",), torch.bfloat16: ("BF16",), torch.float32: ("F32",), torch.int64: ("I64",),
}
_HF_FLOAT_DTYPES = ("F32", "BF16", "F16")


def layout_config(config: ModelConfig, layout: str) -> ModelConfig:
    """The architecture a checkpoint of `layout` holds: transformers checkpoints are dense and have no MTP layer."""
    if layout == HF:
        return config.replace(n_mtp_layers=0, compress_ratios=config.compress_ratios[: config.n_layers],
                              dtype="bf16", expert_dtype="bf16")
    return config


@dataclass(frozen=True)
class ParamSource:
    """How one model parameter is read. Plain: `keys == ((key,),)`. Stacked (routed experts): slot e of the parameter
    is `keys[e]` concatenated along dim 0 (w1 rows then w3 rows for w13)."""

    param: str
    keys: tuple[tuple[str, ...], ...]
    stacked: bool

    def all_keys(self) -> list[str]:
        return [key for group in self.keys for key in group]


def expert_param(name: str) -> tuple[str, str] | None:
    """`layers.3.ffn.experts.w13_scale` -> ("layers.3.ffn.experts", "w13_scale"); None for other names."""
    prefix, _, leaf = name.rpartition(".")
    if prefix.endswith(".ffn.experts") and leaf in _EXPERT_PARAMS:
        return prefix, leaf
    return None


def hf_saved_name(name: str) -> str:
    """Our (non-expert) name -> the name transformers' `save_pretrained` writes for it."""
    if name in _HF_SAVED_GLOBALS:
        return _HF_SAVED_GLOBALS[name]
    # NOTE: transformers reverts its `.norm.` -> `.kv_norm.` rename on save, so the attention kv_norm comes out as
    # `attn.norm`; the compressors' norms are already called `norm` in both namings.
    return "model." + name.replace(".attn.kv_norm.", ".attn.norm.")


def _key(name: str, naming: str) -> str:
    if naming == OFFICIAL:
        return name
    if naming == HF_SAVED:
        return hf_saved_name(name)
    hf = to_hf_name(name)
    assert hf is not None, f"{name} has no transformers name"
    return hf


def plan(params: Iterable[str], naming: str, num_experts: int) -> list[ParamSource]:
    """Sources of every parameter name in `params` under `naming`."""
    out = []
    for name in params:
        expert = expert_param(name)
        if expert is None or naming == HF_NATIVE:
            out.append(ParamSource(name, ((_key(name, naming),),), stacked=False))
            continue
        prefix, leaf = expert
        kind = "scale" if leaf.endswith("_scale") else "weight"
        head = "model." if naming == HF_SAVED else ""
        keys = tuple(tuple(f"{head}{prefix}.{e}.{proj}.{kind}" for proj in _EXPERT_PARAMS[leaf])
                     for e in range(num_experts))
        out.append(ParamSource(name, keys, stacked=True))
    return out


def part_shape(param_shape: tuple[int, ...], source: ParamSource) -> tuple[int, ...]:
    """Shape of each file tensor feeding `source`."""
    if not source.stacked:
        return param_shape
    parts = len(source.keys[0])
    return (param_shape[1] // parts, *param_shape[2:])


def rank_parts(full: Mapping[str, torch.Tensor], tp: TensorParallel) -> dict[str, tuple[int, int, int] | None]:
    """(dim, start, end) of rank `tp.rank`'s part of each parameter of the full model `full` (None: all of it).
    Raises ValueError where a split would cut an FP8 scale block unaligned."""
    parts = {}
    for name, param in full.items():
        dim = split_dim(name)
        weight = full.get(name[: -len("scale")] + "weight") if is_block_scale(name) else None
        parts[name] = local_range(name, tuple(param.shape), tp,
                                  None if weight is None or dim is None else weight.shape[dim])
    return parts


def allowed_dtypes(param: str, dtype: torch.dtype, layout: str) -> tuple[str, ...]:
    """File dtypes accepted for a parameter of in-memory `dtype` (the official layout is exact; transformers
    checkpoints may store floats in any float width, the model then computes with what was stored)."""
    if layout == HF:
        return _HF_FLOAT_DTYPES if dtype.is_floating_point else ("I64",) if dtype == torch.int64 else ()
    if dtype == torch.uint8:
        return ("F8_E8M0", "U8") if param.endswith("scale") else ("I8", "U8")
    return _OFFICIAL_DTYPES.get(dtype, ())


def choose_naming(layout: str, keys: Collection[str], params: Iterable[str], num_experts: int) -> str:
    """The naming whose planned keys best cover the checkpoint's keys (transformers versions differ)."""
    if layout == OFFICIAL:
        return OFFICIAL
    names, present = list(params), set(keys)
    scores = {}
    for naming in (HF_SAVED, HF_NATIVE):
        planned = {k for s in plan(names, naming, num_experts) for k in s.all_keys()}
        scores[naming] = len(planned & present)
    return max(scores, key=lambda n: scores[n])


def detect_layout(keys: set[str]) -> str | None:
    """"official" when the tensors carry official names, "hf" for transformers names, else None."""
    if "embed.weight" in keys:
        return OFFICIAL
    if "model.embed_tokens.weight" in keys:
        return HF
    return None
