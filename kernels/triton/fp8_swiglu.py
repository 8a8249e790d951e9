"""Triton path of kernels/ref/fp8_swiglu.py: the twin's composition over the Triton fp8_linear (the SwiGLU between
the linears is a few elementwise torch ops), so CUDA devices keep running the shared expert's GEMMs in Triton."""

from __future__ import annotations

import functools

from kernels.ref.fp8_swiglu import fp8_swiglu_ffn as composed
from kernels.triton.fp8_linear import fp8_linear

fp8_swiglu_ffn = functools.partial(composed, linear=fp8_linear)
