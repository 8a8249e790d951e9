"""Which implementation runs each op: the one switch between kernels and their torch twins.

Modes (DSV4_KERNELS, or `use(mode)`):
- "auto" (default): Triton kernels for CUDA tensors, the C kernels of kernels/cpu for CPU tensors (each falls back to
  its twin for shapes it does not cover), the twin otherwise.
- "reference": the torch twins everywhere (the executable spec).
- "triton": the Triton kernels on any device, so CI runs the whole model through them under TRITON_INTERPRET=1.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
from collections.abc import Callable, Iterator

MODES = ("auto", "reference", "triton")
_mode = os.environ.get("DSV4_KERNELS", "auto")
if _mode not in MODES:
    raise ValueError(f"DSV4_KERNELS={_mode!r}: choose one of {MODES}")


@contextlib.contextmanager
def use(mode: str) -> Iterator[None]:
    """Run the enclosed code with every op in `mode`."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"unknown kernel mode {mode!r}; choose one of {MODES}")
    previous, _mode = _mode, mode
    try:
        yield
    finally:
        _mode = previous


@functools.cache
def _triton_impl(module: str, name: str) -> Callable | None:
    try:
        return getattr(importlib.import_module(f"kernels.triton.{module}"), name)
    except ImportError:  # no triton in this environment
        return None


def op(reference: Callable, cpu: Callable | None, triton_module: str | None) -> Callable:
    """The dispatching entry point of one op; every implementation shares `reference`'s signature."""
    name = reference.__name__

    @functools.wraps(reference)
    def dispatch(*args, **kwargs):
        if _mode != "reference":
            device = args[0].device.type
            if triton_module and (_mode == "triton" or device == "cuda"):
                impl = _triton_impl(triton_module, name)
                if impl is not None:
                    return impl(*args, **kwargs)
            if cpu is not None and device == "cpu":
                return cpu(*args, **kwargs)
        return reference(*args, **kwargs)

    return dispatch
