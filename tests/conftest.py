"""Suite-wide test setup: one intra-op thread, deterministic seeds, Triton on its CPU interpreter and GPU tests skipped
without a GPU."""

from __future__ import annotations

import os
import random
import zlib
from pathlib import Path

import pytest
import torch
from cli_runner import write_small_checkpoint

if not torch.cuda.is_available():
    # Triton kernels run on the CPU interpreter in CI; it must be chosen before triton is first imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")

# NOTE: the tests run small shapes, where intra-op threads only add overhead and contention (on 2 cores tiny ops got
# ~40x slower with other processes busy).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic_seed(request: pytest.FixtureRequest) -> None:
    seed = zlib.crc32(request.node.nodeid.encode())
    random.seed(seed)
    torch.manual_seed(seed)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small config's random checkpoint, written once for every command-line test."""
    return write_small_checkpoint(tmp_path_factory.mktemp("small-checkpoint"))


@pytest.fixture(scope="session")
def _span_exporter():
    """One OpenTelemetry provider for the whole run (a process may set it only once), exporting to memory."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


@pytest.fixture
def spans(_span_exporter):
    """The spans finished during this test."""
    _span_exporter.clear()
    return _span_exporter
