"""The `python -m model_worker` commands, run as a user runs them (real processes, real files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from cli_runner import run

from foundation.chat import load_tokenizer, render_prompt


def test_logits_are_the_same_in_one_pass_and_in_chunks(small_checkpoint: Path, tmp_path: Path) -> None:
    ids = np.random.default_rng(0).integers(0, 512, 45).tolist()
    (tmp_path / "ids.json").write_text(json.dumps(ids))
    common = ["--checkpoint", str(small_checkpoint), "--input-ids", str(tmp_path / "ids.json"),
              "--numerics", "reference"]
    run("logits", *common, "--out", str(tmp_path / "full.npy"))
    run("logits", *common, "--out", str(tmp_path / "chunked.npy"), "--prefill-chunk", "7")
    run("logits", *common, "--out", str(tmp_path / "tail.npy"), "--prefill-chunk", "10", "--positions", "30:45")
    full, chunked, tail = (np.load(tmp_path / f"{n}.npy", mmap_mode="r") for n in ("full", "chunked", "tail"))
    assert full.shape == (45, 512) and full.dtype == np.float32
    rel = np.linalg.norm(chunked - full, axis=1) / np.linalg.norm(full, axis=1)
    assert rel.max() <= 1e-4
    assert np.abs(tail - full[30:45]).max() <= 1e-4 * np.abs(full).max()


def test_logits_on_two_tensor_parallel_ranks_equal_one_ranks(small_checkpoint: Path, tmp_path: Path) -> None:
    ids = np.random.default_rng(1).integers(0, 512, 45).tolist()
    (tmp_path / "ids.json").write_text(json.dumps(ids))
    common = ["--checkpoint", str(small_checkpoint), "--input-ids", str(tmp_path / "ids.json"),
              "--numerics", "reference", "--prefill-chunk", "16"]
    run("logits", *common, "--out", str(tmp_path / "one.npy"))
    run("logits", *common, "--out", str(tmp_path / "two.npy"), "--tensor-parallel", "2")
    one, two = (np.load(tmp_path / f"{n}.npy", mmap_mode="r") for n in ("one", "two"))
    assert (np.linalg.norm(two - one, axis=1) / np.linalg.norm(one, axis=1)).max() <= 1e-4


def test_logits_rejects_bad_input(small_checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "ids.json").write_text(json.dumps([1, 2, 9999]))
    proc = run("logits", "--checkpoint", str(small_checkpoint), "--input-ids", str(tmp_path / "ids.json"), "--out",
               str(tmp_path / "x.npy"), check=False)
    assert proc.returncode == 2 and "token ids must lie in [0, 512)" in proc.stderr


def test_render_and_parse(tmp_path: Path) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    (tmp_path / "m.json").write_text(json.dumps(messages))
    run("render", "--messages", str(tmp_path / "m.json"), "--mode", "think-max", "--out", str(tmp_path / "p.txt"))
    prompt = (tmp_path / "p.txt").read_text(encoding="utf-8")
    assert prompt.startswith("<｜begin▁of▁sentence｜>Reasoning Effort: Absolute maximum")
    assert prompt.endswith("Be brief.<｜User｜>Hi<｜Assistant｜><think>")
    (tmp_path / "c.txt").write_text("hmm</think>Hello!<｜end▁of▁sentence｜>", encoding="utf-8")
    run("parse", "--completion", str(tmp_path / "c.txt"), "--mode", "think-high", "--out", str(tmp_path / "r.json"))
    parsed = json.loads((tmp_path / "r.json").read_text())
    assert parsed == {"reasoning_content": "hmm", "content": "Hello!", "tool_calls": []}


def test_chat_streams_turns_and_prefills_only_new_tokens() -> None:
    proc = run("chat", "--prompt", "Hello", "--prompt", "And again", "--max-tokens", "4", "--temperature", "0")
    summaries = [line for line in proc.stderr.splitlines() if line.startswith("[length; prefilled")]
    assert len(summaries) == 2, proc.stderr
    tokenizer = load_tokenizer()
    first = render_prompt([{"role": "system", "content": "You are a helpful assistant."},
                           {"role": "user", "content": "Hello"}], "non-think")
    second = "<｜end▁of▁sentence｜><｜User｜>And again<｜Assistant｜></think>"
    assert f"prefilled {len(tokenizer.encode(first))} new tokens" in summaries[0]
    # The second turn feeds the last generated token (sampled, not yet fed), EOS and the new user turn only.
    assert f"prefilled {1 + len(tokenizer.encode(second))} new tokens" in summaries[1]
    assert "Random weights" in proc.stderr and "--checkpoint" in proc.stderr
    assert proc.stdout.count("> ") == 2
