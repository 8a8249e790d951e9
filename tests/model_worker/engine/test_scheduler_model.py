"""Continuous batching over the real model (small config): each batched request's state as if it had run alone, a
preempted request's state continuing exactly where it stopped, and a failing forward pass through the model runner.
The scheduler's logic on its own is test_scheduler.py (a fake runner)."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
import torch
from engine_testlib import PROMPTS, drain, forced, request
from small_config import SMALL

from model_worker.engine import BATCH, EngineUnavailable, Finished, Request, Scheduler
from model_worker.engine.replica import ReplicaBroken
from model_worker.model import DeepseekV4, ForwardBatch
from model_worker.numerics import REFERENCE
from model_worker.sampling import FinishReason
from model_worker.server.errors import status_of


def test_batched_requests_end_in_the_states_they_would_reach_alone(model, tokenizer) -> None:
    scheduler = Scheduler(model, tokenizer, token_budget=128)
    runs = [request(model, f"r{i}", prompt, forced([7 + i], max_tokens=6 + i)) for i, prompt in enumerate(PROMPTS)]
    for r, _ in runs:
        scheduler.submit(r)
    drain(scheduler)
    for i, (r, recorder) in enumerate(runs):
        final = recorder.final
        assert final.finish_reason == FinishReason.LENGTH and final.token_ids == [7 + i] * (6 + i)
        assert recorder.commits == [PROMPTS[i], [7 + i] * (5 + i)]  # input, then every fed output token
        alone = model.new_state()
        model(ForwardBatch.single(PROMPTS[i] + final.token_ids[:-1], alone))
        expected = model(ForwardBatch.single([3], alone)).logits
        got = model(ForwardBatch.single([3], r.state)).logits
        assert (torch.linalg.norm(got - expected) / torch.linalg.norm(expected)) <= 1e-4
    # prefill went in chunks of at most the budget, mixed with decodes
    assert scheduler.stats.prefilled_tokens == sum(map(len, PROMPTS))
    assert scheduler.stats.decoded_tokens == sum(5 + i for i in range(3))


def test_bad_requests_are_refused_at_the_door_and_a_failing_pass_fails_only_its_requests(model, tokenizer,
                                                                                          monkeypatch) -> None:
    scheduler = Scheduler(model, tokenizer)
    other = DeepseekV4(dataclasses.replace(SMALL, window_size=16), quantized=True, numerics=REFERENCE)
    for bad in (request(model, "x", [], forced([6]))[0], request(model, "x", [1, 10_000], forced([6]))[0],
                Request("x", other.new_state(), [1, 2], forced([6]), print)):
        with pytest.raises(ValueError):
            scheduler.submit(bad)
    doomed, doomed_events = request(model, "doomed", PROMPTS[2], forced([6], max_tokens=3))
    scheduler.submit(doomed)
    real_forward = model.forward
    monkeypatch.setattr(model, "forward", lambda batch: (_ for _ in ()).throw(RuntimeError("device lost")))
    scheduler.step()
    monkeypatch.setattr(model, "forward", real_forward)
    assert doomed_events.final.finish_reason == FinishReason.ERROR and doomed_events.final.discard_state
    assert "device lost" in doomed_events.final.error
    assert isinstance(doomed_events.final.failure(), RuntimeError) and not doomed_events.final.unavailable
    # The engine's own failure (a rank of the replica gone) fails its requests as unavailable: retry elsewhere.
    lost, lost_events = request(model, "lost", PROMPTS[2], forced([6], max_tokens=3))
    scheduler.submit(lost)
    monkeypatch.setattr(model, "forward", lambda batch: (_ for _ in ()).throw(ReplicaBroken("rank 1 is gone")))
    scheduler.step()
    monkeypatch.setattr(model, "forward", real_forward)
    assert lost_events.final.unavailable and isinstance(lost_events.final.failure(), EngineUnavailable)
    assert status_of(lost_events.final.failure()) == grpc.StatusCode.UNAVAILABLE
    good, good_events = request(model, "good", PROMPTS[2], forced([6], max_tokens=3))
    scheduler.submit(good)
    drain(scheduler)
    assert good_events.final.finish_reason == FinishReason.LENGTH


def test_interactive_requests_preempt_batch_work_which_then_resumes(model, tokenizer) -> None:
    scheduler = Scheduler(model, tokenizer, max_running=1)
    batch, batch_events = request(model, "batch", PROMPTS[1], forced([4], max_tokens=12), priority=BATCH)
    scheduler.submit(batch)
    for _ in range(4):
        scheduler.step()  # the batch request is decoding
    interactive, interactive_events = request(model, "interactive", PROMPTS[2], forced([5], max_tokens=3))
    scheduler.submit(interactive)
    while not interactive_events.events or not isinstance(interactive_events.events[-1], Finished):
        scheduler.step()
        assert not isinstance(batch_events.events[-1], Finished)  # paused while the interactive one ran
    drain(scheduler)
    assert scheduler.stats.preempted == 1
    final = batch_events.final
    assert final.finish_reason == FinishReason.LENGTH and final.token_ids == [4] * 12
    # the paused request's state continued exactly where it stopped
    alone = model.new_state()
    model(ForwardBatch.single(PROMPTS[1] + final.token_ids[:-1], alone))
    expected = model(ForwardBatch.single([3], alone)).logits
    got = model(ForwardBatch.single([3], batch.state)).logits
    assert (torch.linalg.norm(got - expected) / torch.linalg.norm(expected)) <= 1e-4
