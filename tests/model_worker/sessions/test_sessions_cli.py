"""`logits --session-store --session` across processes and the `sessions` command, run as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run


@pytest.mark.slow
def test_a_session_continues_in_a_new_process(small_checkpoint: Path, tmp_path: Path) -> None:
    ids = np.random.default_rng(1).integers(0, 512, 300).tolist()
    for name, part in (("all", ids), ("a", ids[:280]), ("b", ids[280:])):
        (tmp_path / f"{name}.json").write_text(json.dumps(part))
    common = ["--checkpoint", str(small_checkpoint), "--numerics", "reference", "--prefill-chunk", "20"]
    store = f"file://{tmp_path}/store"
    run("logits", *common, "--input-ids", str(tmp_path / "all.json"), "--out", str(tmp_path / "all.npy"))
    first = run("logits", *common, "--input-ids", str(tmp_path / "a.json"), "--out", str(tmp_path / "a.npy"),
                "--session-store", store, "--session", "agent-1")
    assert "280 tokens" in first.stdout
    second = run("logits", *common, "--input-ids", str(tmp_path / "b.json"), "--out", str(tmp_path / "b.npy"),
                 "--session-store", store, "--session", "agent-1", "--positions", "last")
    assert "300 tokens" in second.stdout
    # the second process computed only its 20 new positions; its last row is the full pass's last row
    full, resumed = np.load(tmp_path / "all.npy"), np.load(tmp_path / "b.npy")
    assert resumed.shape == (1, 512)
    assert np.linalg.norm(resumed[0] - full[-1]) / np.linalg.norm(full[-1]) <= 1e-4

    sessions = ["sessions", "--store", store, "--checkpoint", str(small_checkpoint), "--numerics", "reference"]
    assert run(*sessions, "list").stdout.split() == ["agent-1"]
    shown = json.loads(run(*sessions, "show", "agent-1").stdout)
    assert shown["tokens"] == 300 and shown["seq"] == 1
    assert run(*sessions, "verify").stdout.strip() == "agent-1: ok"
    run(*sessions, "export", "agent-1", str(tmp_path / "agent.tar"))
    imported = run(*sessions, "--tenant", "other", "import", str(tmp_path / "agent.tar"), "--id", "copy").stdout
    assert imported.strip() == "copy"
    assert run(*sessions, "expire", "--ttl", "3600").stdout == ""  # used just now
    run(*sessions, "delete", "agent-1")
    assert run(*sessions, "list").stdout.split() == []
    assert run(*sessions, "--tenant", "other", "list").stdout.split() == ["copy"]
    missing = run(*sessions, "show", "agent-1", check=False)
    assert missing.returncode == 1 and "SessionNotFound" in missing.stdout


def test_verify_reports_a_damaged_value(small_checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "ids.json").write_text(json.dumps(list(range(1, 300))))
    store = tmp_path / "store"
    run("logits", "--checkpoint", str(small_checkpoint), "--input-ids", str(tmp_path / "ids.json"), "--out",
        str(tmp_path / "o.npy"), "--session-store", str(store), "--session", "s", "--positions", "last")
    value = max((p for p in store.rglob("*") if p.is_file() and "/b/" in str(p)), key=lambda p: p.stat().st_size)
    value.write_bytes(value.read_bytes()[:-3])
    result = run("sessions", "--store", str(store), "--checkpoint", str(small_checkpoint), "verify", "s", check=False)
    assert result.returncode == 1 and "checksum mismatch" in result.stdout
