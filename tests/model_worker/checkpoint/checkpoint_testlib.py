"""Helpers shared by the checkpoint tests: a small config with every layer kind, logits comparisons, and checks on
tensor-parallel shares."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from small_config import SMALL

from model_worker.model import DeepseekV4, ForwardBatch
from model_worker.parallel import TensorParallel

# SMALL with as many output groups as heads, so it splits over 1, 2 and 4 tensor-parallel ranks.
TP_SMALL = SMALL.replace(o_groups=4)
TP_RANKS = [TensorParallel(rank, size) for size in (2, 4) for rank in range(size)]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    # NOTE: on a shared 2-core box, intra-op threads contend with other processes and make tiny ops ~40x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def logits(model: DeepseekV4, ids: torch.Tensor, draft: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """All-position logits (and the MTP draft logits when asked) of one fresh sequence."""
    out = model(ForwardBatch.single(ids, model.new_state(), logits="all", draft_logits=draft))
    return out.logits, out.mtp_logits


def rel_err(ours: torch.Tensor, theirs: torch.Tensor) -> torch.Tensor:
    """Per-position ||ours - theirs|| / ||theirs||."""
    return (ours.float() - theirs.float()).norm(dim=-1) / theirs.float().norm(dim=-1)


def copy_checkpoint(src: Path, dst: Path) -> Path:
    """A private copy to damage, without the fingerprint cache."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".fingerprint.json"))
    return dst


def parameters(model: DeepseekV4) -> dict[str, torch.Tensor]:
    return dict(model.named_parameters())


def assert_same_tensors(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    """Same names, and per name the same dtype, shape and bytes (float8 has no torch.equal of its own)."""
    assert got.keys() == want.keys(), sorted(set(got) ^ set(want))[:5]
    for name, tensor in want.items():
        assert (got[name].dtype, got[name].shape) == (tensor.dtype, tensor.shape), name
        raw = (lambda t: t.view(torch.uint8)) if tensor.element_size() == 1 else (lambda t: t)
        assert torch.equal(raw(got[name]), raw(tensor)), name
