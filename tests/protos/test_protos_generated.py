"""The committed Python code of protos/ is what scripts/gen_protos.sh generates from the .proto files today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_generated_code_is_current(tmp_path: Path) -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "gen_protos.sh"), str(tmp_path)], check=True, cwd=ROOT,
                   env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*.py*"))
    assert generated, "nothing was generated"
    for relative in generated:
        assert (ROOT / relative).read_text() == (tmp_path / relative).read_text(), (
            f"{relative} is stale: run scripts/gen_protos.sh")
