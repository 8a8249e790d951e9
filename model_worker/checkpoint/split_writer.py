"""Split a whole official checkpoint into the per-rank files DeepSeek's convert.py writes, one rank at a time: only
one rank's tensors are held at once, and most of them are views of the memory-mapped source.

Each `model{rank}-mp{N}.safetensors` holds what convert.py writes for that rank (reference §7): every tensor the
runtime splits (`model_worker.parallel.shard`) cut to the rank's part, the rank's routed experts under their global
names with their I8 bytes stored as F4, `wo_a` dequantized to BF16 without its scale, and the shared expert whole
(convert.py's split table names only the transformers spellings gate/up/down_proj, so official w1/w2/w3 pass uncut).
`mp_split.json` records the source's fingerprint, config and each file's hash, so the split keeps the fingerprint.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch

from kernels.ref.formats import dequantize_fp8_blocks
from model_worker.checkpoint.checkpoint_dir import INFERENCE_CONFIG, ROOT_CONFIG, CheckpointDir, open_checkpoint_dir
from model_worker.checkpoint.errors import CheckpointError
from model_worker.checkpoint.fingerprint import content_hashes, model_fingerprint
from model_worker.checkpoint.layouts import OFFICIAL, ParamSource, plan, rank_parts
from model_worker.checkpoint.mp_split import MANIFEST_FILE, SplitManifest, rank_file_name, write_manifest
from model_worker.checkpoint.safetensors_io import PACKED_PAIRS, write_safetensors
from model_worker.checkpoint.validate import validate_whole
from model_worker.model import DeepseekV4
from model_worker.parallel import TensorParallel

_KEPT_WHOLE = re.compile(r"\.ffn\.shared_experts\.")


def split_checkpoint(src: str | Path, dst: str | Path, tensor_parallel: int) -> Path:
    """Write the `tensor_parallel`-way split of the official checkpoint `src` into the new or empty `dst`."""
    if tensor_parallel < 1:
        raise CheckpointError(f"--tensor-parallel must be >= 1, not {tensor_parallel}")
    ckpt = open_checkpoint_dir(src)
    if ckpt.split_size is not None or ckpt.layout != OFFICIAL:
        what = f"already split {ckpt.split_size} ways" if ckpt.split_size else f"{ckpt.layout} layout"
        raise CheckpointError(f"{ckpt.path}: checkpoint-split reads a whole official-layout checkpoint ({what})")
    config, num_experts = ckpt.config, ckpt.config.n_routed_experts
    full = dict(DeepseekV4(config, quantized=True).named_parameters())
    sources = plan(full, OFFICIAL, num_experts)
    validate_whole(ckpt, full, sources)
    ranks = [TensorParallel(rank, tensor_parallel) for rank in range(tensor_parallel)]
    try:  # every rank's split is checked before the first file is written
        DeepseekV4(config, quantized=True, tp=ranks[0])
        plans = [(rank_parts(full, tp), tp.split(num_experts, "n_routed_experts")) for tp in ranks]
    except ValueError as exc:
        raise CheckpointError(f"{ckpt.path}: cannot split this model over {tensor_parallel} ranks: {exc}") from exc
    out = _empty_dir(Path(dst))
    fingerprint = model_fingerprint(ckpt)
    sizes = {}
    for tp, (parts, experts) in zip(ranks, plans, strict=True):
        name = rank_file_name(tp.rank, tensor_parallel)
        tensors, dtypes = _rank_tensors(ckpt, sources, parts, experts)
        sizes[name] = write_safetensors(out / name, tensors, dtypes)
        del tensors  # views and slices of this rank only; the next rank starts from nothing
    hashes = content_hashes(out, sizes)  # also primes `.fingerprint.json`, so loading ranks need not re-hash
    for name in (ROOT_CONFIG, INFERENCE_CONFIG, *(p.name for p in ckpt.path.glob("*token*"))):
        if (ckpt.path / name).is_file():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ckpt.path / name, out / name)
    files = {name: {"size": sizes[name], "sha256": hashes[name]} for name in sizes}
    write_manifest(out, SplitManifest(tensor_parallel, fingerprint, config.to_official_dict(), files))
    return out


def _rank_tensors(ckpt: CheckpointDir, sources: list[ParamSource], parts: dict[str, tuple[int, int, int] | None],
                  experts: tuple[int, int]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors: dict[str, torch.Tensor] = {}
    dtypes: dict[str, str] = {}
    for source in sources:
        if source.stacked:
            for key in (k for keys in source.keys[experts[0] : experts[1]] for k in keys):
                stored = ckpt.entry(key).dtype
                tensors[key], dtypes[key] = ckpt.tensor(key), PACKED_PAIRS if stored == "I8" else stored
            continue
        key = source.keys[0][0]
        tensor, part = ckpt.tensor(key), None if _KEPT_WHOLE.search(key) else parts[source.param]
        if part is not None:
            tensor = tensor.narrow(part[0], part[1], part[2] - part[1])  # made contiguous as it is written
        tensors[key], dtypes[key] = tensor, ckpt.entry(key).dtype
    for key in [k for k in tensors if k.endswith(".attn.wo_a.weight")]:
        scale_key = key[: -len("weight")] + "scale"
        scale = tensors.pop(scale_key)
        del dtypes[scale_key]
        tensors[key], dtypes[key] = _dense_bf16(key, tensors[key], scale), "BF16"
    return tensors, dtypes


def _dense_bf16(key: str, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    # An FP8 value times a power-of-two scale has at most 4 significant bits, so BF16 holds it exactly unless the
    # scale leaves BF16's exponent range; check rather than assume, the split must keep the weights.
    dense = dequantize_fp8_blocks(weight, scale)
    out = dense.to(torch.bfloat16)
    if not torch.equal(out.float(), dense):
        raise CheckpointError(f"{key}: its FP8 values times their scales do not fit BF16 exactly")
    return out


def _empty_dir(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stale = sorted(p.name for p in out.iterdir() if p.name.endswith(".safetensors") or p.name == MANIFEST_FILE)
    if stale:
        raise CheckpointError(f"{out}: already holds checkpoint files {stale[:3]}; split into an empty directory")
    return out
