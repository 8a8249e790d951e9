"""Intra-op thread policy for the CPU path: decode-sized passes run torch on one thread, larger passes on all.

A decode step is hundreds of small ops, where a second torch thread costs more in synchronization than it saves;
the few large reads of a decode step (the output head, long index scans) are split across cores by the CPU kernels
themselves (kernels/cpu/parallel.py). Prefill chunks gain ~30% from torch's threads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

SMALL_PASS_TOKENS = 16
_configured = torch.get_num_threads()


@contextlib.contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """Run the enclosed code with `count` torch intra-op threads, restoring the previous count after."""
    previous = torch.get_num_threads()
    if count == previous:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def threads_for(num_tokens: int) -> contextlib.AbstractContextManager[None]:
    """The thread count suited to a forward pass of `num_tokens` (CPU only; no-op elsewhere)."""
    return intra_op_threads(1 if num_tokens <= SMALL_PASS_TOKENS else _configured)
