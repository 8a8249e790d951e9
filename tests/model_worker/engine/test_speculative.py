"""Speculative decoding in the scheduler (small model, random weights): whatever the drafts, the replies and the
states are those of non-speculative decoding; drafts equal to the model's own tokens are all kept (the accept path,
about half the passes); wrong drafts are all rolled back; the MTP drafter runs and its acceptance is reported."""

from __future__ import annotations

import pytest
import torch
from engine_testlib import PROMPTS, drain, request

from model_worker.engine import MtpDrafter, Scheduler
from model_worker.model import ForwardBatch
from model_worker.sampling import SamplingParams


class Oracle:
    """Drafts from known replies: the true next token, or with `wrong` always another one."""

    def __init__(self, replies: dict[str, list[int]], wrong: bool = False) -> None:
        self.replies, self.wrong, self.calls = replies, wrong, 0

    def propose(self, requests):
        self.calls += 1
        drafts = []
        for r in requests:
            reply, done = self.replies[r.request_id], len(r.output.token_ids)
            draft = reply[done] if done < len(reply) else 1
            drafts.append((draft + 1) % 512 if self.wrong else draft)
        return drafts


def run(model, tokenizer, params: list[SamplingParams], drafter=None, commit_every: int = 0):
    scheduler = Scheduler(model, tokenizer, token_budget=256, drafter=drafter)
    runs = [request(model, f"r{i}", prompt, p, commit_every=commit_every) for i, (prompt, p) in
            enumerate(zip(PROMPTS, params))]
    for r, _ in runs:
        scheduler.submit(r)
    steps = drain(scheduler)
    return runs, steps, scheduler


def continuation_logits(model, r) -> torch.Tensor:
    return model(ForwardBatch.single([3], r.state)).logits


def assert_same_replies_and_states(model, plain, speculative) -> None:
    for (r0, rec0), (r1, rec1) in zip(plain, speculative):
        assert rec1.final.token_ids == rec0.final.token_ids
        assert rec1.final.sequence_tokens == rec0.final.sequence_tokens == r1.state.num_tokens
        assert "".join(e.text for e in rec1.events[:-1]) == "".join(e.text for e in rec0.events[:-1])
        assert torch.allclose(continuation_logits(model, r1), continuation_logits(model, r0), atol=1e-4)


@pytest.mark.parametrize("sampled", [False, True])
def test_drafts_of_the_models_own_tokens_are_all_kept(model, tokenizer, sampled):
    params = [SamplingParams(temperature=0.9 if sampled else 0.0, seed=i, max_tokens=12, stop_token_ids=(5,))
              for i in range(len(PROMPTS))]
    plain, plain_steps, _ = run(model, tokenizer, params)
    replies = {r.request_id: rec.final.token_ids for r, rec in plain}
    speculative, steps, scheduler = run(model, tokenizer, params, Oracle(replies))
    assert_same_replies_and_states(model, plain, speculative)
    for (_, rec), (_, plain_rec) in zip(speculative, plain):
        assert rec.final.accepted_draft_tokens == rec.final.draft_tokens >= (len(plain_rec.final.token_ids) - 2) // 2
    assert steps < plain_steps and scheduler.stats.accepted_draft_tokens > 0


def test_wrong_drafts_are_all_rolled_back_even_across_commits(model, tokenizer):
    params = [SamplingParams(temperature=0.0, max_tokens=9) for _ in PROMPTS]
    plain, _, _ = run(model, tokenizer, params, commit_every=2)
    replies = {r.request_id: rec.final.token_ids for r, rec in plain}
    speculative, _, _ = run(model, tokenizer, params, Oracle(replies, wrong=True), commit_every=2)
    assert_same_replies_and_states(model, plain, speculative)
    for (_, rec), (_, plain_rec) in zip(speculative, plain):
        assert rec.final.accepted_draft_tokens == 0 and rec.final.draft_tokens > 0
        assert rec.commits == plain_rec.commits


def test_the_mtp_drafter_leaves_greedy_replies_unchanged(model, tokenizer):
    params = [SamplingParams(temperature=0.0, max_tokens=10) for _ in PROMPTS]
    plain, _, _ = run(model, tokenizer, params)
    speculative, _, scheduler = run(model, tokenizer, params, MtpDrafter(model))
    assert_same_replies_and_states(model, plain, speculative)
    assert scheduler.stats.draft_tokens >= sum(len(rec.final.token_ids) - 1 for _, rec in speculative)
    assert all(rec.final.draft_tokens > 0 for _, rec in speculative)
