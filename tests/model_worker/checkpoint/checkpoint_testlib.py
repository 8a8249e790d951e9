"""Helpers shared by the checkpoint tests: a small config with every layer kind and logits comparisons."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch

from model_worker.model import DeepseekV4, ForwardBatch


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
