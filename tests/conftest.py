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


INTEGRATION_DIRS = ("integration", "deploy", "telemetry")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tiers: a test is `integration` when it runs real parts (its module uses realparts.py's PostgreSQL, Redis,
    Celery or service processes, or it lives in a folder of whole-platform checks); the rest are unit tests with
    fakes or in-process parts. `gpu` tests are skipped without a CUDA device."""
    skip_gpu = None if torch.cuda.is_available() else pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if _runs_real_parts(item):
            item.add_marker(pytest.mark.integration)
        if skip_gpu is not None and "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def _runs_real_parts(item: pytest.Item) -> bool:
    folder = Path(item.path).relative_to(Path(__file__).parent).parts[0]
    module = getattr(item, "module", None)
    return folder in INTEGRATION_DIRS or (module is not None and any(
        getattr(value, "__module__", None) == "realparts" for value in vars(module).values()))


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
