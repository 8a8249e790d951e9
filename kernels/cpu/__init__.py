"""C kernels for the CPU decode path, one op per .c file, each behind a Python wrapper with its torch twin's signature.

`build.py` compiles them on first use (-O3 -march=native, cached per source and CPU) and loads them with ctypes,
which releases the GIL, so `parallel.py` can split a long call (the output head, a million-token index scan) across
cores. Each wrapper takes the shapes it was written for (decode-sized batches, CPU tensors, the stored formats) and
hands everything else to its twin in kernels.ref.
"""

from kernels.cpu import (
    act_quant,
    argmax,
    bf16_linear,
    compressor_project,
    fp4_experts,
    fp8_linear,
    fp8_swiglu,
    hadamard,
    indexer_topk,
    kv_codec,
    mhc,
    moe_gate,
    rms_norm,
    rope,
    sinkhorn,
    sparse_attention,
)

__all__ = [
    "act_quant",
    "argmax",
    "bf16_linear",
    "compressor_project",
    "fp4_experts",
    "fp8_linear",
    "fp8_swiglu",
    "hadamard",
    "indexer_topk",
    "kv_codec",
    "mhc",
    "moe_gate",
    "rms_norm",
    "rope",
    "sinkhorn",
    "sparse_attention",
]
