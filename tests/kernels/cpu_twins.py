"""Shared checks for the kernels.cpu tests: run a C kernel wrapper and its torch twin on the same inputs, make sure
the wrapper really took its C path (or really fell back), and compare bf16 results in ulps.

Importing this module fails loudly when the C library cannot be built, unless DSV4_CPU_KERNELS=0 turns it off."""

from __future__ import annotations

import importlib
import os

import pytest
import torch

from kernels.cpu.build import library

ENABLED = os.environ.get("DSV4_CPU_KERNELS") != "0"
if ENABLED:
    assert library() is not None, "the CPU kernels did not build (see the RuntimeWarning); set DSV4_CPU_KERNELS=0"

skip_when_disabled = pytest.mark.skipif(not ENABLED, reason="DSV4_CPU_KERNELS=0")

# Multiples of an FP8 block's scale, 448 setting it: e4m3 ties to even both ways (normal, subnormal, near the top),
# values that round to zero, zero.
E4M3_EDGES = (448.0, 432.0, 400.0, 447.0, 420.0, 17.0, 19.0, 1.0625, 1.1875, 0.53125, 0.0) + tuple(
    m * 2.0**-10 for m in (1, 3, 5, 7, 15, 0.5, 0.6)
)


def edge_block(edges: tuple[float, ...], size: int, scale: float, gen: torch.Generator) -> torch.Tensor:
    """`size` values whose largest magnitude is edges[0] * scale: the edges, their negations, then random."""
    fill = (torch.rand(size, generator=gen) * 2 - 1) * edges[0] * 0.9
    block = torch.cat((torch.tensor(edges), -torch.tensor(edges[1:]), fill))[:size]
    return block * scale


def _modules(module: str) -> tuple[object, object]:
    return importlib.import_module(f"kernels.cpu.{module}"), importlib.import_module(f"kernels.ref.{module}")


def run_both(monkeypatch: pytest.MonkeyPatch, module: str, name: str, *args: object) -> tuple[object, object]:
    """(C wrapper's result, twin's result); the twin is made to raise while the wrapper runs, so a silent
    fallback fails the test."""
    cpu, ref = _modules(module)
    twin = getattr(ref, name)
    expected = twin(*args)

    def fell_back(*_: object, **__: object) -> None:
        raise AssertionError(f"kernels.cpu.{module}.{name} fell back to its twin on a shape it should cover")

    monkeypatch.setattr(ref, name, fell_back)
    got = getattr(cpu, name)(*args)
    monkeypatch.setattr(ref, name, twin)
    return got, expected


def assert_falls_back(monkeypatch: pytest.MonkeyPatch, module: str, name: str, *args: object) -> None:
    """The wrapper hands these inputs to its twin and returns the twin's exact result."""
    cpu, ref = _modules(module)
    twin = getattr(ref, name)
    expected = twin(*args)
    calls = []

    def spy(*a: object, **k: object) -> object:
        calls.append(a)
        return twin(*a, **k)

    monkeypatch.setattr(ref, name, spy)
    got = getattr(cpu, name)(*args)
    monkeypatch.setattr(ref, name, twin)
    assert len(calls) == 1, f"kernels.cpu.{module}.{name} did not fall back to its twin"
    assert got.dtype == expected.dtype
    assert torch.equal(got, expected)


def bf16_ulps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance in bf16 steps between two tensors of bf16 values (any float dtype holding them)."""

    def ordered(x: torch.Tensor) -> torch.Tensor:
        assert torch.equal(x.to(torch.bfloat16).to(x.dtype), x), "not bf16 values"
        bits = x.to(torch.bfloat16).view(torch.int16).to(torch.int32)
        return torch.where(bits < 0, -(bits & 0x7FFF), bits)

    return (ordered(a) - ordered(b)).abs()


def assert_within_one_bf16_ulp(got: torch.Tensor, expected: torch.Tensor, atol: float = 0.0) -> None:
    """Every value is the twin's or its bf16 neighbour, except where the two differ by at most atol times the
    largest expected magnitude (float32 rounding noise left over from cancellation, larger than a tiny value's ulp)."""
    assert got.shape == expected.shape and got.dtype == expected.dtype
    if not got.numel():
        return
    scale = max(1.0, float(expected.abs().max()))
    ulps = bf16_ulps(got, expected)
    ulps[(got.double() - expected.double()).abs() <= atol * scale] = 0
    worst = int(ulps.flatten().argmax())
    assert int(ulps.max()) <= 1, (
        f"{int(ulps.max())} bf16 ulps at flat index {worst}: got {got.flatten()[worst].item()}, "
        f"expected {expected.flatten()[worst].item()}"
    )


def assert_close_to_scale(got: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float) -> None:
    """assert_close with atol taken relative to the largest expected magnitude (at least 1)."""
    assert got.dtype == expected.dtype
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(got, expected, rtol=rtol, atol=atol * scale)


def force_thread_split(monkeypatch: pytest.MonkeyPatch, cores: int = 4) -> None:
    """Let kernels.cpu.parallel.split cut long ranges into several parts even on a small machine."""
    monkeypatch.setattr("kernels.cpu.parallel._CORES", cores)
