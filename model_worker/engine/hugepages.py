"""The output head on transparent huge pages (CPU).

Every decode step streams the whole vocab x dim head (66 MB for `tiny`, 1 GiB for Flash) for a handful of rows of
activations: a memory-bound GEMV. On 4 KiB pages the hardware prefetchers stop at each page boundary and the TLB
misses every 4 KiB; on 2 MiB pages the same GEMV runs ~10-15% faster on the 2-core development machine
(docs/benchmarks.md). A checkpoint's head is a view of its file map, where Linux gives no huge pages, so it moves to
anonymous memory advised MADV_HUGEPAGE (the file's pages stay only in the evictable page cache). Where transparent
huge pages are off, or on other systems, the head stays where it is.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import torch
from torch import nn

HUGE_PAGE = 2 << 20
_THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def available() -> bool:
    """Whether this kernel backs MADV_HUGEPAGE regions with huge pages ("always" or "madvise" mode)."""
    try:
        mode = _THP_MODE.read_text()
    except OSError:
        return False
    return hasattr(mmap, "MADV_HUGEPAGE") and "[never]" not in mode


def on_huge_pages(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of `tensor` (CPU, contiguous) in a 2 MiB-aligned anonymous mapping advised MADV_HUGEPAGE. The tensor
    keeps the mapping alive."""
    nbytes = tensor.numel() * tensor.element_size()
    span = nbytes + -nbytes % HUGE_PAGE
    region = mmap.mmap(-1, span + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    whole = torch.frombuffer(region, dtype=torch.uint8)
    start = -whole.data_ptr() % HUGE_PAGE
    region.madvise(mmap.MADV_HUGEPAGE, start, span)  # before the copy faults the pages in
    out = whole[start : start + nbytes].view(tensor.dtype).view(tensor.shape)
    out.copy_(tensor)
    return out


def move_weight_to_huge_pages(module: nn.Module) -> None:
    """Put `module.weight` (on the CPU) on huge pages, where the kernel offers them."""
    if available() and module.weight.device.type == "cpu":
        module.weight = nn.Parameter(on_huge_pages(module.weight.detach().contiguous()), requires_grad=False)
