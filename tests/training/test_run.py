"""A training run is deterministic and resumable: stopped after some steps and resumed, it ends with the weights and
the losses of a run that never stopped; its log and checkpoint say where it is."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from model_worker.config import TINY
from training.__main__ import main
from training.batches import Batches
from training.run import CHECKPOINT

SMALL_AGENT = dataclasses.replace(TINY, dim=64, moe_inter_dim=32, q_lora_rank=32, head_dim=64, rope_head_dim=32,
                                  o_lora_rank=16, index_head_dim=32, index_n_heads=8, window_size=16,
                                  compress_ratios=(0, 4, 16, 4, 0), index_topk=4)


def run(out, config, *extra: str) -> None:
    assert main(["train", "--out", str(out), "--config", str(config), "--steps", "4", "--rows", "1",
                 "--lengths", "2:900,1024", "--vocab-sample", "8", "--warmup", "2", *extra]) == 0


def test_a_resumed_run_ends_as_an_uninterrupted_one(tmp_path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(SMALL_AGENT.to_official_dict()))
    run(tmp_path / "whole", config)
    run(tmp_path / "parts", config, "--max-steps-this-call", "2")
    assert torch.load(tmp_path / "parts" / CHECKPOINT, weights_only=False)["step"] == 2
    with (tmp_path / "parts" / "log.jsonl").open("a") as log:  # a step logged by a run killed before its next save
        log.write(json.dumps({"step": 3, "loss": 99.0, "tokens": 0, "lr": 0.0}) + "\n")
    run(tmp_path / "parts", config)
    whole, parts = (torch.load(tmp_path / name / CHECKPOINT, weights_only=False) for name in ("whole", "parts"))
    assert whole["step"] == parts["step"] == 4 and whole["tokens"] == parts["tokens"] == 2 * 900 + 2 * 1024
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, parts["model"][name]), name
    losses = [[json.loads(line)["loss"] for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
              for name in ("whole", "parts")]
    assert losses[0] == losses[1] and len(losses[0]) == 4 and all(0 < loss < 20 for loss in losses[0])
    assert (tmp_path / "parts" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="another run"):
        run(tmp_path / "whole", config, "--seed", "1")


def test_batches_are_whole_traces_with_replies_in_the_loss() -> None:
    batch = Batches(3).batch(0, 3, 1024)
    assert batch.token_ids.shape == (3, 1024) and batch.token_ids[:, 0].tolist() == [0, 0, 0]  # each row opens a trace
    assert all(int(row.sum()) > 0 for row in batch.loss_mask)
    assert torch.equal(batch.token_ids, Batches(3).batch(0, 3, 1024).token_ids)
