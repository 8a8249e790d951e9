"""Compiles this folder's C kernels into one shared library on first use and loads it with ctypes.

The library is cached per source text, compiler flags and CPU (it is built with -march=native), under
$DSV4_KERNEL_CACHE or ~/.cache/dsv4-kernels. Where it cannot be built (no C compiler, not x86-64 with AVX2/FMA/F16C)
or DSV4_CPU_KERNELS=0, `library()` is None and every op runs its torch twin.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).parent
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-std=gnu11", "-shared", "-fPIC", "-Wall", "-Werror")
_P, _I64, _INT, _F32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
SIGNATURES = {
    "fp8_linear": (_INT, [_P, _INT, _I64, _I64, _P, _P, _I64, _I64, _INT, _P, _INT]),
    "encode_kv": (None, [_P, _INT, _I64, _I64, _I64, _I64, _P]),
    "decode_kv": (None, [_P, _I64, _I64, _I64, _I64, _P]),
    "encode_index_keys": (None, [_P, _INT, _I64, _I64, _P]),
    "apply_rope": (None, [_P, _INT, _I64, _I64, _I64, _P, _P, _I64, _INT, _P]),
    "sparse_attention": (_INT, [_P, _INT, _I64, _I64, _I64, _INT, _I64, _P, _I64, _P, _I64, _P, _I64, _P, _I64, _P,
                                _F32, _P]),
    "fp4_round_trip": (None, [_P, _INT, _I64, _I64, _P]),
    "hc_pre": (_INT, [_P, _INT, _I64, _I64, _I64, _P, _P, _P, _F32, _F32, _I64, _P, _P, _P]),
    "hc_post": (_INT, [_P, _INT, _P, _INT, _I64, _I64, _I64, _P, _P, _P]),
    "hc_head": (_INT, [_P, _INT, _I64, _I64, _I64, _P, _P, _P, _F32, _F32, _P]),
    "fp4_expert_ffn": (_INT, [_P, _INT, _I64, _I64, _P, _P, _I64, _P, _P, _P, _P, _I64, _F32, _INT, _P]),
    "indexer_topk_fp4": (_INT, [_P, _P, _I64, _I64, _I64, _P, _I64, _P, _I64, _I64, _P, _I64, _INT, _P, _P]),
    "sinkhorn": (None, [_P, _I64, _I64, _I64, _F32, _P]),
    "bf16_linear": (None, [_P, _I64, _I64, _P, _I64, _I64, _I64, _INT, _P]),
    "rms_norm": (None, [_P, _INT, _I64, _I64, _P, _F32, _P]),
    "moe_gate": (_INT, [_P, _INT, _I64, _I64, _P, _I64, _P, _P, _I64, _P, _INT, _I64, _F32, _P, _P]),
    "fp8_swiglu_ffn": (_INT, [_P, _INT, _I64, _I64, _P, _P, _P, _P, _I64, _P, _P, _F32, _INT, _P, _INT]),
    "argmax_rows": (None, [_P, _I64, _I64, _P]),
    "hadamard_rows": (None, [_P, _INT, _I64, _I64, _P]),
    "compressor_project": (_INT, [_P, _INT, _I64, _I64, _P, _P, _I64, _P, _I64, _P, _P]),
}


def _cpu_identity() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return "\n".join(sorted({line for line in lines if line.startswith(("model name", "flags"))}))


def _cache_dir() -> Path:
    return Path(os.environ.get("DSV4_KERNEL_CACHE") or Path.home() / ".cache" / "dsv4-kernels")


def _compile(sources: list[Path], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Compile next to the target and rename: concurrent first uses (several workers) never see a partial file.
    fd, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        compiler = os.environ.get("CC", "cc")
        subprocess.run([compiler, *FLAGS, "-o", partial, *map(str, sources), "-lm"], check=True,
                       capture_output=True, text=True)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


@functools.cache
def library() -> ctypes.CDLL | None:
    if os.environ.get("DSV4_CPU_KERNELS", "1") == "0" or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    sources = sorted(HERE.glob("*.c"))
    digest = hashlib.sha256()
    for path in [*sources, *sorted(HERE.glob("*.h"))]:
        digest.update(path.name.encode() + path.read_bytes())
    digest.update(" ".join((os.environ.get("CC", "cc"), *FLAGS)).encode() + _cpu_identity().encode())
    target = _cache_dir() / f"dsv4_cpu_kernels_{digest.hexdigest()[:20]}.so"
    try:
        if not target.exists():
            _compile(sources, target)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or error
        warnings.warn(f"CPU kernels unavailable, using the torch twins: {detail}", RuntimeWarning, stacklevel=2)
        return None
    for name, (restype, argtypes) in SIGNATURES.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


def cpu_activation(*tensors: torch.Tensor) -> bool:
    """Whether every tensor is a float32 or bf16 CPU tensor: the activations the kernels read and write."""
    return all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.bfloat16) for t in tensors)


def check(status: int, op: str) -> None:
    if status != 0:
        raise MemoryError(f"CPU kernel {op} could not allocate its scratch memory")
