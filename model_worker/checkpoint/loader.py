"""Load a DeepSeek-V4 checkpoint (official FP8/FP4 layout or transformers layout) into a `DeepseekV4`: the whole
model, or one tensor-parallel rank's share of it (no rank ever holds the full weights).

Every header is validated against the full model's shapes before any weight is touched. Parameters are then
assigned in module order (layer by layer) as this rank's part of the memory-mapped files: a whole tensor or a row
slice is a zero-copy view of the map, a column slice a contiguous copy of just that slice. Routed experts stored one
tensor per expert are copied, once, into their stacked parameter, and the other ranks' experts are never read. From
the per-rank files of DeepSeek's convert.py, a rank maps its own file only. On another device each tensor is moved
as it is assigned.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from model_worker.checkpoint.checkpoint_dir import CheckpointDir, open_checkpoint_dir
from model_worker.checkpoint.errors import CheckpointError
from model_worker.checkpoint.fingerprint import model_fingerprint
from model_worker.checkpoint.layouts import OFFICIAL, ParamSource, choose_naming, plan, rank_parts
from model_worker.checkpoint.validate import validate_rank_file, validate_whole
from model_worker.config import ModelConfig
from model_worker.model import DeepseekV4
from model_worker.model.moe import Experts
from model_worker.numerics import OFFICIAL as OFFICIAL_NUMERICS
from model_worker.numerics import Numerics
from model_worker.parallel import SINGLE, TensorParallel


@dataclass(frozen=True)
class CheckpointInfo:
    """What was loaded. `fingerprint` is None when the caller skipped it; `ignored` lists checkpoint tensors the
    model has no place for by design (MTP weights in a transformers checkpoint). `split_size` is N for per-rank
    files (`shards` then names this rank's file only), None for a whole checkpoint."""

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
    split_size: int | None = None


def load_checkpoint(path: str | Path, numerics: Numerics = OFFICIAL_NUMERICS, device: str | torch.device = "cpu",
                    fingerprint: bool = True, tp: TensorParallel = SINGLE) -> tuple[DeepseekV4, CheckpointInfo]:
    """Load the checkpoint directory `path` (rank `tp.rank`'s share when `tp.size` > 1). The official layout gives
    a quantized model (FP8 linears, packed FP4 experts, MTP); the transformers layout a dense one without MTP.
    Raises CheckpointError on any mismatch, including a model that does not split over `tp.size` ranks."""
    ckpt = open_checkpoint_dir(path, tp)
    quantized, num_experts = ckpt.layout == OFFICIAL, ckpt.config.n_routed_experts
    try:
        model = DeepseekV4(ckpt.config, quantized=quantized, numerics=numerics, tp=tp)
        # The full model lives on the meta device: it gives the shapes the files must have and allocates nothing.
        full = dict(DeepseekV4(ckpt.config, quantized=quantized, numerics=numerics).named_parameters())
        parts = rank_parts(full, tp)
        experts = tp.split(num_experts, "n_routed_experts")
    except ValueError as exc:
        raise CheckpointError(f"{ckpt.path}: cannot split this model over {tp.size} tensor-parallel ranks: {exc}"
                              ) from exc
    local = dict(model.named_parameters())
    naming = choose_naming(ckpt.layout, ckpt.locations, full, num_experts)
    sources = plan(full, naming, num_experts)
    if ckpt.split_size is None:
        ignored, dense = validate_whole(ckpt, full, sources), set()
    else:
        ignored, dense = (), validate_rank_file(ckpt, full, local, sources, experts)
    device = torch.device(device)
    for source in sources:
        module = source.param.rpartition(".")[0]
        if module in dense and source.param.endswith(".scale"):
            _assign(model, source.param, None)  # convert.py stored this linear dense: no scale
        else:
            _assign(model, source.param, _read(ckpt, source, local[source.param], parts[source.param], full,
                                               experts, device))
    if device.type != "cpu":
        model.to(device)  # the rope tables are buffers built at construction; parameters are already there
    assert not any(p.is_meta for p in model.parameters()), "a parameter was left unloaded"
    info = CheckpointInfo(
        path=ckpt.path, layout=ckpt.layout, naming=naming, config=ckpt.config,
        fingerprint=model_fingerprint(ckpt) if fingerprint else None, config_source=ckpt.config_source,
        shards=tuple(sorted(ckpt.files)), num_tensors=len(ckpt.locations),
        total_bytes=sum(f.size for f in ckpt.files.values()), ignored=ignored, split_size=ckpt.split_size,
    )
    return model, info


def _read(ckpt: CheckpointDir, source: ParamSource, param: nn.Parameter, part: tuple[int, int, int] | None,
          full: dict[str, nn.Parameter], experts: tuple[int, int], device: torch.device) -> torch.Tensor:
    if not source.stacked:
        tensor = _as_param_dtype(ckpt.tensor(source.keys[0][0]), param)
        dim, start, end = part or (0, 0, 0)
        # A per-rank file may hold this rank's part already; a whole checkpoint holds the full tensor.
        if part is not None and tensor.shape[dim] == full[source.param].shape[dim]:
            tensor = tensor.narrow(dim, start, end - start)
            if dim != 0:
                tensor = tensor.contiguous()  # kernels read rows contiguously; copies just this slice
        return tensor.to(device)
    out = None
    for slot, keys in enumerate(source.keys[experts[0] : experts[1]]):  # this rank's experts only
        row = 0
        for key in keys:
            chunk = _as_param_dtype(ckpt.tensor(key), param)
            if out is None:  # the stored dtype (transformers checkpoints may store any float width)
                out = torch.empty(param.shape, dtype=chunk.dtype, device=device)
            out[slot, row : row + chunk.shape[0]].copy_(chunk)
            row += chunk.shape[0]
    assert out is not None, f"{source.param}: no experts on this rank"
    return out


def _as_param_dtype(tensor: torch.Tensor, param: nn.Parameter) -> torch.Tensor:
    # Packed FP4 is I8 in official files; the model keeps raw bytes as uint8 (a free reinterpretation).
    return tensor.view(torch.uint8) if param.dtype == torch.uint8 and tensor.dtype == torch.int8 else tensor


def _assign(model: nn.Module, name: str, tensor: torch.Tensor | None) -> None:
    module_name, _, leaf = name.rpartition(".")
    value = None if tensor is None else nn.Parameter(tensor, requires_grad=False)
    setattr(model.get_submodule(module_name), leaf, value)


def resident_bytes_per_expert_param(model: DeepseekV4) -> float:
    """Bytes held by routed-expert tensors (packed weights + scales) per logical expert parameter: 0.5 + 1/32 for
    packed FP4 with ue8m0 scales per 32, 2 for bf16, 4 for float32. Works on meta-device models and on one
    tensor-parallel rank's share (counting the experts it holds)."""
    stored = logical = 0
    for module in model.modules():
        if isinstance(module, Experts):
            for tensor in (module.w13, module.w2, module.w13_scale, module.w2_scale):
                if tensor is not None:
                    stored += tensor.numel() * tensor.element_size()
            config = model.config
            logical += module.w13.shape[0] * 3 * config.moe_inter_dim * config.dim
    if logical == 0:
        raise ValueError("model has no routed experts")
    return stored / logical
