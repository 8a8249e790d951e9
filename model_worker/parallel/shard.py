"""The tensor-parallel split of DeepSeek-V4's parameters, as the official runtime splits them (reference §7): query
and output projections and sinks by heads (wq_b, wo_a by rows; wo_b by columns), the indexer by its heads, the
embedding and the head by vocabulary, routed experts by expert. The K=V head, the compressors, the router, the shared
expert (as the official per-rank files keep it: Pro's 3,072 hidden units would not split into whole FP8 blocks over
16 ranks), norms and mHC are replicated on every rank.

FP8 weights carry one scale per 128x128 block: a rank's scale rows (or columns) are the blocks its slice touches, so
a slice must start on a block boundary or lie inside one block."""

from __future__ import annotations

import re

import torch

from model_worker.tensor_parallel import TensorParallel

_BLOCK = 128
_SPLIT = [(re.compile(pattern), dim) for pattern, dim in (
    (r"^embed\.weight$", 0),
    (r"^head\.weight$", 0),
    (r"\.attn\.wq_b\.(weight|scale)$", 0),
    (r"\.attn\.wo_a\.(weight|scale)$", 0),
    (r"\.attn\.wo_b\.(weight|scale)$", 1),
    (r"\.attn\.attn_sink$", 0),
    (r"\.attn\.indexer\.wq_b\.(weight|scale)$", 0),
    (r"\.attn\.indexer\.weights_proj\.weight$", 0),
    (r"\.ffn\.experts\.(w13|w2|w13_scale|w2_scale)$", 0),
)]


def split_dim(name: str) -> int | None:
    """The dim `name` is split along over ranks; None when every rank holds all of it."""
    return next((dim for pattern, dim in _SPLIT if pattern.search(name)), None)


def is_block_scale(name: str) -> bool:
    """An FP8 linear's 128x128 block scales (the routed experts' FP4 scales are per expert, split with them)."""
    return name.endswith(".scale")


def local_range(name: str, full_shape: tuple[int, ...], tp: TensorParallel,
                weight_full: int | None = None) -> tuple[int, int, int] | None:
    """(dim, start, end) of this rank's part of parameter `name` (full shape `full_shape`), or None if replicated.
    For a block scale, `weight_full` is its weight's full size along the split dim."""
    dim = split_dim(name)
    if dim is None or tp.size == 1:
        return None
    if not is_block_scale(name):
        start, end = tp.split(full_shape[dim], name)
        return dim, start, end
    start, end = tp.split(weight_full, name)
    if start % _BLOCK and start // _BLOCK != (end - 1) // _BLOCK:
        raise ValueError(f"{name}: a slice [{start}, {end}) crosses a {_BLOCK}-block boundary unaligned")
    return dim, start // _BLOCK, -(-end // _BLOCK)


def shard_state_dict(full: dict[str, torch.Tensor], tp: TensorParallel) -> dict[str, torch.Tensor]:
    """This rank's parameters from full ones."""
    out = {}
    for name, tensor in full.items():
        weight = full.get(name[: -len("scale")] + "weight") if is_block_scale(name) else None
        dim = split_dim(name)
        part = local_range(name, tuple(tensor.shape), tp,
                           None if weight is None or dim is None else weight.shape[dim])
        if part is None:
            out[name] = tensor
        else:  # a column slice is copied (kernels read rows contiguously); a row slice stays a view
            piece = tensor.narrow(part[0], part[1], part[2] - part[1])
            out[name] = piece if part[0] == 0 else piece.contiguous()
    return out
