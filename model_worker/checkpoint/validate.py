"""Header checks, run before any weight is read: every tensor the model needs is there with the shape and dtype the
FULL model gives it (whatever part of it this rank will read), and nothing else is.

A per-rank file (convert.py layout) is checked against this rank's share instead: its own experts only, each other
tensor already cut for the rank or whole (convert.py leaves the shared expert whole), FP4 experts stored as F4,
and an FP8 linear possibly stored dense in BF16 without its scale (convert.py does that to `wo_a`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from model_worker.checkpoint.checkpoint_dir import CheckpointDir
from model_worker.checkpoint.errors import CheckpointError
from model_worker.checkpoint.layouts import HF, ParamSource, allowed_dtypes, part_shape
from model_worker.checkpoint.safetensors_io import PACKED_PAIRS


@dataclass(frozen=True)
class _Expect:
    param: str
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]


def validate_whole(ckpt: CheckpointDir, full: dict[str, nn.Parameter], sources: list[ParamSource]) -> tuple[str, ...]:
    """Check a whole checkpoint against the full model; returns the tensors it may hold but the model ignores."""
    expected = {}
    for source in sources:
        param = full[source.param]
        for key in source.all_keys():
            expected[key] = _Expect(source.param, (part_shape(tuple(param.shape), source),),
                                    allowed_dtypes(source.param, param.dtype, ckpt.layout))
    # transformers ignores MTP weights, so a transformers checkpoint may carry them without being wrong.
    ignored = tuple(sorted(k for k in ckpt.locations if k not in expected and ckpt.layout == HF and
                           k.startswith(("mtp.", "model.mtp."))))
    _check(ckpt, expected, ignored)
    return ignored


def validate_rank_file(ckpt: CheckpointDir, full: dict[str, nn.Parameter], local: dict[str, nn.Parameter],
                       sources: list[ParamSource], experts: tuple[int, int]) -> set[str]:
    """Check one rank's file of a split; returns the names of the linears it stores dense (their scales absent)."""
    dense = {source.param[: -len(".weight")] for source in sources
             if _stored_dense(ckpt, source.keys[0][0], source.param, full)}
    expected = {}
    for source in sources:
        param = full[source.param]
        dtypes = allowed_dtypes(source.param, param.dtype, ckpt.layout)
        if source.stacked:
            dtypes += (PACKED_PAIRS,) if not source.param.endswith("_scale") else ()
            for key in (k for keys in source.keys[experts[0] : experts[1]] for k in keys):
                expected[key] = _Expect(source.param, (part_shape(tuple(param.shape), source),), dtypes)
            continue
        module = source.param.rpartition(".")[0]
        if module in dense and source.param.endswith(".scale"):
            continue
        if module in dense:
            dtypes = ("BF16",)
        shapes = tuple(dict.fromkeys((tuple(local[source.param].shape), tuple(param.shape))))
        expected[source.keys[0][0]] = _Expect(source.param, shapes, dtypes)
    _check(ckpt, expected, ())
    return dense


def _stored_dense(ckpt: CheckpointDir, key: str, param: str, full: dict[str, nn.Parameter]) -> bool:
    if not param.endswith(".weight") or param[: -len("weight")] + "scale" not in full:
        return False
    scale_key = key[: -len("weight")] + "scale"
    return key in ckpt.locations and ckpt.entry(key).dtype == "BF16" and scale_key not in ckpt.locations


def _check(ckpt: CheckpointDir, expected: dict[str, _Expect], ignored: tuple[str, ...]) -> None:
    whole = ckpt.rank is None
    where = ckpt.path if whole else ckpt.path / next(iter(ckpt.files))
    kind = f"a {ckpt.layout}-layout" if whole else f"rank {ckpt.rank}'s file of a {ckpt.split_size}-way split"
    kind += " DeepSeek-V4 with this config"
    missing = [key for key in expected if key not in ckpt.locations]
    if missing:
        shown = ", ".join(f"{k!r} (for {expected[k].param})" for k in missing[:5])
        raise CheckpointError(f"{where}: {len(missing)} tensor(s) missing from the {ckpt.layout} checkpoint: "
                              f"{shown}{' ...' if len(missing) > 5 else ''}")
    unexpected = sorted(set(ckpt.locations) - set(expected) - set(ignored))
    if unexpected:
        raise CheckpointError(f"{where}: {len(unexpected)} unexpected tensor(s), not part of {kind}: "
                              f"{unexpected[:5]}")
    for key, expect in expected.items():
        entry = ckpt.entry(key)
        if entry.storage_shape not in expect.shapes:
            stored = f" (stored as {list(entry.storage_shape)} bytes)" if entry.dtype == PACKED_PAIRS else ""
            raise CheckpointError(f"{ckpt.path / ckpt.locations[key]}: tensor {key!r} has shape {list(entry.shape)}"
                                  f"{stored}, expected {' or '.join(str(list(s)) for s in expect.shapes)}")
        if entry.dtype not in expect.dtypes:
            raise CheckpointError(f"{ckpt.path / ckpt.locations[key]}: tensor {key!r} has dtype {entry.dtype}, "
                                  f"expected {' or '.join(expect.dtypes)}")
