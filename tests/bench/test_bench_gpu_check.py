"""bench/gpu_check stays runnable between GPU sessions: its --smoke run takes every step (floors, each kernel against
its twin, the Flash-shaped slice's decode) at tiny shapes on CPU under the Triton interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_smoke_run_writes_its_table(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.md"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRITON_INTERPRET": "1"}
    subprocess.run([sys.executable, "-m", "bench.gpu_check", "--smoke", "--out", str(out)], cwd=ROOT, env=env,
                   check=True, capture_output=True, timeout=300)
    table = out.read_text()
    for row in ("FP4 MoE", "FP8 linear", "indexer top-", "sparse attention", "| 1,024 |"):
        assert row in table
    errors = [line.split("|")[2].strip() for line in table.splitlines() if line.startswith(("| FP", "| sparse"))]
    assert all(float(error) < 1e-2 for error in errors), table
    assert "1.0000 of picks agree" in table
