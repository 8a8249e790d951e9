"""Continuous batching over the real model (small config): chunked prefills interleaved with running decodes, each
request's state as if it had run alone, commit points, cancellation, priorities, backpressure, failures."""

from __future__ import annotations

import dataclasses
import threading

import grpc
import pytest
import torch
from small_config import SMALL

from model_worker.chat import load_tokenizer
from model_worker.checkpoint.random_init import random_state_dict
from model_worker.engine import BATCH, EngineUnavailable, Finished, Overloaded, Request, Scheduler, TextDelta
from model_worker.model import DeepseekV4, ForwardBatch
from model_worker.numerics import REFERENCE
from model_worker.parallel.replica import ReplicaBroken
from model_worker.sampling import FinishReason, SamplingParams
from model_worker.server.errors import status_of

PROMPTS = [torch.randint(1, 500, (n,), generator=torch.Generator().manual_seed(n)).tolist() for n in (700, 50, 5)]


@pytest.fixture(scope="module")
def model() -> DeepseekV4:
    model = DeepseekV4(SMALL, quantized=True, numerics=REFERENCE)
    model.load_state_dict(random_state_dict(model, 7), assign=True, strict=True)
    return model


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def forced(tokens: list[int], **params) -> SamplingParams:
    """Greedy with a bias that makes the output predictable whatever the batch (no argmax near-ties)."""
    return SamplingParams(temperature=0.0, logit_bias={t: 50.0 for t in tokens}, **params)


class Recorder:
    def __init__(self) -> None:
        self.events: list[TextDelta | Finished] = []
        self.commits: list[list[int]] = []

    def __call__(self, event) -> None:
        self.events.append(event)

    @property
    def final(self) -> Finished:
        assert isinstance(self.events[-1], Finished)
        return self.events[-1]


def request(model, name: str, prompt: list[int], params: SamplingParams, **kwargs) -> tuple[Request, Recorder]:
    recorder = Recorder()
    return Request(name, model.new_state(), prompt, params, recorder, on_commit=recorder.commits.append,
                   **kwargs), recorder


def drain(scheduler: Scheduler, limit: int = 500) -> int:
    steps = 0
    while scheduler.step():
        steps += 1
        assert steps < limit
    return steps


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


def test_running_decodes_stream_while_a_long_input_prefills(model, tokenizer) -> None:
    scheduler = Scheduler(model, tokenizer, token_budget=64)
    short, short_events = request(model, "short", PROMPTS[2], forced([9], max_tokens=20))
    scheduler.submit(short)
    scheduler.step()  # short is decoding now
    long, long_events = request(model, "long", PROMPTS[0], forced([8], max_tokens=2))
    scheduler.submit(long)
    steps_with_a_short_delta = 0
    while not long_events.events:  # the long request's first output arrives when its input is all in
        before = len(short_events.events)
        scheduler.step()
        steps_with_a_short_delta += any(isinstance(e, TextDelta) for e in short_events.events[before:])
    # every step of the long prefill (700 tokens at <= 63 a step beside the decode) also streamed a short token
    assert steps_with_a_short_delta >= len(PROMPTS[0]) // 64
    drain(scheduler)


def test_abort_returns_partial_output_and_commits_nothing_of_it(model, tokenizer) -> None:
    scheduler = Scheduler(model, tokenizer)
    r, recorder = request(model, "a", PROMPTS[1], forced([5], max_tokens=50), commit_every=4)
    scheduler.submit(r)
    for _ in range(7):
        scheduler.step()
    assert scheduler.abort("a") and not scheduler.abort("unknown")
    drain(scheduler)
    final = recorder.final
    assert final.finish_reason == FinishReason.ABORT and final.discard_state and 0 < len(final.token_ids) < 50
    assert recorder.commits == [PROMPTS[1], [5] * 4]  # the input and the mid-output commit; nothing after it


def test_interactive_requests_go_first_and_the_queue_pushes_back(model, tokenizer) -> None:
    scheduler = Scheduler(model, tokenizer, max_running=1, max_waiting=2)
    batch, batch_events = request(model, "batch", PROMPTS[2], forced([4], max_tokens=2), priority=BATCH)
    interactive, interactive_events = request(model, "interactive", PROMPTS[2], forced([4], max_tokens=2))
    scheduler.submit(batch)
    scheduler.submit(interactive)
    with pytest.raises(Overloaded):
        scheduler.submit(request(model, "third", PROMPTS[2], forced([4], max_tokens=2))[0])
    scheduler.step()
    assert interactive_events.events and not batch_events.events
    drain(scheduler)
    assert batch_events.final.finish_reason == FinishReason.LENGTH


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


def test_the_engine_thread_serves_submissions(model, tokenizer) -> None:
    scheduler = Scheduler(model, tokenizer)
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(stop,), daemon=True)
    thread.start()
    done = threading.Event()
    recorder = Recorder()

    def on_event(event) -> None:
        recorder(event)
        if isinstance(event, Finished):
            done.set()

    scheduler.submit(Request("t", model.new_state(), PROMPTS[1], forced([3], max_tokens=4), on_event))
    assert done.wait(60)
    stop.set()
    thread.join(10)
    assert recorder.final.token_ids == [3] * 4 and scheduler.load == {"waiting": 0, "running": 0}


def test_admission_by_kv_budget(model, tokenizer) -> None:
    probe = Scheduler(model, tokenizer)
    first, first_events = request(model, "first", PROMPTS[1], forced([3], max_tokens=4))
    one_request = probe._bytes_at_end(first)
    scheduler = Scheduler(model, tokenizer, kv_budget_bytes=int(1.5 * one_request))
    second, second_events = request(model, "second", PROMPTS[1], forced([3], max_tokens=4))
    scheduler.submit(first)
    scheduler.submit(second)
    most_running = 0
    while scheduler.step():
        most_running = max(most_running, len(scheduler.running))
    assert most_running == 1  # the second waited for the first's bytes to come back
    assert first_events.final.finish_reason == second_events.final.finish_reason == FinishReason.LENGTH
    roomy = Scheduler(model, tokenizer, kv_budget_bytes=3 * one_request)
    for name in ("a", "b"):
        roomy.submit(request(model, name, PROMPTS[1], forced([3], max_tokens=4))[0])
    roomy.step()
    assert len(roomy.running) == 2


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
