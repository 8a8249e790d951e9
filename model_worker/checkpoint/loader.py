"""Load a DeepSeek-V4 checkpoint (official FP8/FP4 layout or transformers layout) into a `DeepseekV4`.

Every header is validated before any weight is touched. Parameters are then assigned in module order (layer by
layer) as zero-copy views of the memory-mapped shards; only routed experts stored one tensor per expert are copied,
once, into their stacked parameter. On another device each tensor is moved as it is assigned.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from model_worker.checkpoint.checkpoint_dir import CheckpointDir, open_checkpoint_dir
from model_worker.checkpoint.errors import CheckpointError
from model_worker.checkpoint.fingerprint import model_fingerprint
from model_worker.checkpoint.layouts import HF, OFFICIAL, ParamSource, allowed_dtypes, choose_naming, part_shape, plan
from model_worker.config import ModelConfig
from model_worker.model import DeepseekV4
from model_worker.model.moe import Experts
from model_worker.numerics import OFFICIAL as OFFICIAL_NUMERICS
from model_worker.numerics import Numerics


@dataclass(frozen=True)
class CheckpointInfo:
    """What was loaded. `fingerprint` is None when the caller skipped it; `ignored` lists checkpoint tensors the
    model has no place for by design (MTP weights in a transformers checkpoint)."""

    path: Path
    layout: str
    naming: str
    config: ModelConfig
    fingerprint: str | None
    config_source: str
    shards: tuple[str, ...]
    num_tensors: int
    total_bytes: int
    ignored: tuple[str, ...] = ()


def load_checkpoint(path: str | Path, numerics: Numerics = OFFICIAL_NUMERICS, device: str | torch.device = "cpu",
                    fingerprint: bool = True) -> tuple[DeepseekV4, CheckpointInfo]:
    """Load the checkpoint directory `path`. The official layout gives a quantized model (FP8 linears, packed FP4
    experts, MTP); the transformers layout a dense one without MTP. Raises CheckpointError on any mismatch."""
    ckpt = open_checkpoint_dir(path)
    model = DeepseekV4(ckpt.config, quantized=ckpt.layout == OFFICIAL, numerics=numerics)
    params = dict(model.named_parameters())
    naming = choose_naming(ckpt.layout, ckpt.locations, params, ckpt.config.n_routed_experts)
    sources = plan(params, naming, ckpt.config.n_routed_experts)
    ignored = _validate(ckpt, params, sources)
    device = torch.device(device)
    for source in sources:
        _assign(model, source.param, _read(ckpt, source, params[source.param], device))
    if device.type != "cpu":
        model.to(device)  # the rope tables are buffers built at construction; parameters are already there
    assert not any(p.is_meta for p in model.parameters()), "a parameter was left unloaded"
    info = CheckpointInfo(
        path=ckpt.path, layout=ckpt.layout, naming=naming, config=ckpt.config,
        fingerprint=model_fingerprint(ckpt) if fingerprint else None, config_source=ckpt.config_source,
        shards=tuple(sorted(ckpt.files)), num_tensors=len(ckpt.locations),
        total_bytes=sum(f.size for f in ckpt.files.values()), ignored=ignored,
    )
    return model, info


def _validate(ckpt: CheckpointDir, params: dict[str, nn.Parameter], sources: list[ParamSource]) -> tuple[str, ...]:
    expected: dict[str, ParamSource] = {key: s for s in sources for key in s.all_keys()}
    missing = [key for key in expected if key not in ckpt.locations]
    if missing:
        shown = ", ".join(f"{k!r} (for {expected[k].param})" for k in missing[:5])
        raise CheckpointError(f"{ckpt.path}: {len(missing)} tensor(s) missing from the {ckpt.layout} checkpoint: "
                              f"{shown}{' ...' if len(missing) > 5 else ''}")
    # transformers ignores MTP weights, so a transformers checkpoint may carry them without being wrong.
    ignored = tuple(sorted(k for k in ckpt.locations if k not in expected and ckpt.layout == HF and
                           k.startswith(("mtp.", "model.mtp."))))
    unexpected = sorted(set(ckpt.locations) - set(expected) - set(ignored))
    if unexpected:
        raise CheckpointError(f"{ckpt.path}: {len(unexpected)} unexpected tensor(s), not part of a "
                              f"{ckpt.layout}-layout DeepSeek-V4 with this config: {unexpected[:5]}")
    for key, source in expected.items():
        param, entry = params[source.param], ckpt.entry(key)
        want_shape = part_shape(tuple(param.shape), source)
        if entry.shape != want_shape:
            raise CheckpointError(f"{ckpt.path / ckpt.locations[key]}: tensor {key!r} has shape {list(entry.shape)},"
                                  f" expected {list(want_shape)}")
        allowed = allowed_dtypes(source.param, param.dtype, ckpt.layout)
        if entry.dtype not in allowed:
            raise CheckpointError(f"{ckpt.path / ckpt.locations[key]}: tensor {key!r} has dtype {entry.dtype}, "
                                  f"expected {' or '.join(allowed)}")
    return ignored


def _read(ckpt: CheckpointDir, source: ParamSource, param: nn.Parameter, device: torch.device) -> torch.Tensor:
    if not source.stacked:
        return _as_param_dtype(ckpt.tensor(source.keys[0][0]), param).to(device)
    first = _as_param_dtype(ckpt.tensor(source.keys[0][0]), param)
    out = torch.empty(param.shape, dtype=first.dtype, device=device)
    for slot, keys in enumerate(source.keys):
        row = 0
        for key in keys:
            part = _as_param_dtype(ckpt.tensor(key), param)
            out[slot, row : row + part.shape[0]].copy_(part)
            row += part.shape[0]
    return out


def _as_param_dtype(tensor: torch.Tensor, param: nn.Parameter) -> torch.Tensor:
    # Packed FP4 is I8 in official files; the model keeps raw bytes as uint8 (a free reinterpretation).
    return tensor.view(torch.uint8) if param.dtype == torch.uint8 and tensor.dtype == torch.int8 else tensor


def _assign(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(module_name), leaf, nn.Parameter(tensor, requires_grad=False))


def resident_bytes_per_expert_param(model: DeepseekV4) -> float:
    """Bytes held by routed-expert tensors (packed weights + scales) per logical expert parameter: 0.5 + 1/32 for
    packed FP4 with ue8m0 scales per 32, 2 for bf16, 4 for float32. Works on meta-device models too."""
    stored = logical = 0
    for module in model.modules():
        if isinstance(module, Experts):
            for tensor in (module.w13, module.w2, module.w13_scale, module.w2_scale):
                if tensor is not None:
                    stored += tensor.numel() * tensor.element_size()
            config = model.config
            logical += config.n_routed_experts * 3 * config.moe_inter_dim * config.dim
    if logical == 0:
        raise ValueError("model has no routed experts")
    return stored / logical
