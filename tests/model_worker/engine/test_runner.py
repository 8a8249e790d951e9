"""The model runner over the real model (small config): a plan runs as one pass that hands each request the rows it
asked for, as its own pass would; the runner holds `no_grad`, the model's forward leaves grad mode to its caller."""

from __future__ import annotations

import torch
from engine_testlib import PROMPTS

from model_worker.engine import DecodeRow, LocalRunner, PrefillChunk, Request, SchedulerOutput
from model_worker.model import ForwardBatch
from model_worker.sampling import SamplingParams


def rel_err(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours - theirs).norm(dim=-1) / theirs.norm(dim=-1)).max().item()


def test_a_plan_runs_as_one_pass_giving_each_request_its_rows(model) -> None:
    runner = LocalRunner(model)
    decoding, prefilling = model.new_state(), model.new_state()
    runner.forward(ForwardBatch.single(PROMPTS[1], decoding))
    twin = model.new_state()
    twin.restore(decoding.snapshot())
    plan = SchedulerOutput(
        [DecodeRow(Request("d", decoding, PROMPTS[1], SamplingParams(), print), 5, draft=6)],
        [PrefillChunk(Request("p", prefilling, PROMPTS[0], SamplingParams(), print), PROMPTS[0][:40], False)])
    out = runner.run(plan)
    assert [tuple(r.shape) for r in out.decode_logits] == [(2, 512)]  # after the sampled token and after the draft
    assert [tuple(r.shape) for r in out.prefill_logits] == [(1, 512)]  # after the chunk's last token
    assert decoding.num_tokens == len(PROMPTS[1]) + 2 and prefilling.num_tokens == 40
    alone = runner.forward(ForwardBatch.single([5, 6], twin, logits="all")).logits
    assert rel_err(out.decode_logits[0], alone) <= 1e-4
    chunk_alone = runner.forward(ForwardBatch.single(PROMPTS[0][:40], model.new_state())).logits
    assert rel_err(out.prefill_logits[0], chunk_alone) <= 1e-4


def test_the_runner_holds_no_grad_and_the_model_leaves_grad_mode_to_its_caller(model) -> None:
    modes: list[bool] = []  # grad mode inside the model's forward, as its final norm sees it
    handle = model.norm.register_forward_pre_hook(lambda module, args: modes.append(torch.is_grad_enabled()))
    try:
        model(ForwardBatch.single([1, 2, 3], model.new_state()))
        LocalRunner(model).forward(ForwardBatch.single([1, 2, 3], model.new_state()))
    finally:
        handle.remove()
    assert modes == [True, False]
