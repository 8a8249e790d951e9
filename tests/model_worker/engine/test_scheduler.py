"""The scheduler's logic over a fake model runner (no model: milliseconds a test): requests reply as they would
alone, the per-step token budget, admission order and priorities, KV-budget admission and preemption, cancellation,
backpressure, failures, commit points and speculative drafts. The real model under it is test_scheduler_model.py."""

from __future__ import annotations

import dataclasses
import threading

import grpc
import pytest
from engine_testlib import PROMPTS, FakeRunner, Recorder, alone, drain, forced, request
from small_config import SMALL

from model_worker.engine import BATCH, EngineUnavailable, Finished, MtpDrafter, Overloaded, Request, Scheduler
from model_worker.engine.replica import ReplicaBroken
from model_worker.engine.request import TextDelta
from model_worker.sampling import FinishReason, SamplingParams
from model_worker.server.errors import status_of

GREEDY = SamplingParams(temperature=0.0)


def test_batched_requests_reply_as_they_would_alone(fake, tokenizer) -> None:
    scheduler = Scheduler(fake, tokenizer, token_budget=128)
    runs = [request(fake, f"r{i}", prompt, dataclasses.replace(GREEDY, max_tokens=6 + i))
            for i, prompt in enumerate(PROMPTS)]
    for r, _ in runs:
        scheduler.submit(r)
    drain(scheduler)
    for i, (r, recorder) in enumerate(runs):
        final = recorder.final
        assert final.finish_reason == FinishReason.LENGTH and final.token_ids == alone(fake, PROMPTS[i], [0] * (6 + i))
        assert recorder.commits == [PROMPTS[i], final.token_ids[:-1]]  # input, then every fed output token
        # the state holds exactly the input and every sampled token but the last (owed to the next turn)
        assert r.state.tokens == PROMPTS[i] + final.token_ids[:-1] and r.state.committed == r.state.num_tokens
    assert scheduler.stats.prefilled_tokens == sum(map(len, PROMPTS))
    assert scheduler.stats.decoded_tokens == sum(5 + i for i in range(3))
    assert all(plan.num_tokens <= 128 for plan in fake.plans)


def test_running_decodes_stream_while_a_long_input_prefills(fake, tokenizer) -> None:
    scheduler = Scheduler(fake, tokenizer, token_budget=64)
    short, short_events = request(fake, "short", PROMPTS[2], forced([9], max_tokens=20))
    scheduler.submit(short)
    scheduler.step()  # short is decoding now
    long, long_events = request(fake, "long", PROMPTS[0], forced([8], max_tokens=2))
    scheduler.submit(long)
    steps_with_a_short_delta = 0
    while not long_events.events:  # the long request's first output arrives when its input is all in
        before = len(short_events.events)
        scheduler.step()
        steps_with_a_short_delta += any(isinstance(e, TextDelta) for e in short_events.events[before:])
    # every step of the long prefill (700 tokens at <= 63 a step beside the decode) also streamed a short token
    assert steps_with_a_short_delta >= len(PROMPTS[0]) // 64
    drain(scheduler)
    # the decode goes first in each pass and the prefill takes the rest of the budget, in chunks only the last of
    # which completes the input
    chunks = [(plan, chunk) for plan in fake.plans for chunk in plan.prefills if chunk.request is long]
    assert [len(chunk.token_ids) for _, chunk in chunks] == [63] * 11 + [7]
    assert [chunk.completes for _, chunk in chunks] == [False] * 11 + [True]
    assert all([row.request for row in plan.decodes] == [short] and plan.num_tokens == 64 for plan, _ in chunks[:-1])


def test_prefill_chunks_go_by_priority_then_arrival_within_the_budget(fake, tokenizer) -> None:
    scheduler = Scheduler(fake, tokenizer, token_budget=60)
    for name, priority in (("batch", BATCH), ("first", 0), ("second", 0)):
        scheduler.submit(request(fake, name, PROMPTS[1], forced([3], max_tokens=2), priority=priority)[0])
    scheduler.step()
    assert [(c.request.request_id, len(c.token_ids)) for c in fake.plans[0].prefills] == [("first", 50),
                                                                                         ("second", 10)]
    scheduler.step()  # the second goes on where it stopped; the batch request gets what is left
    assert [(c.request.request_id, len(c.token_ids)) for c in fake.plans[1].prefills] == [("second", 40),
                                                                                         ("batch", 19)]


def test_admission_goes_by_priority_then_arrival(fake, tokenizer) -> None:
    scheduler = Scheduler(fake, tokenizer, max_running=1)
    order: list[str] = []
    for name, priority in (("b1", BATCH), ("i1", 0), ("b2", BATCH), ("i2", 0)):
        recorder = Recorder()

        def on_event(event, name=name, recorder=recorder) -> None:
            recorder(event)
            if isinstance(event, Finished):
                order.append(name)

        scheduler.submit(Request(name, fake.new_state(), PROMPTS[2], forced([3], max_tokens=3), on_event,
                                 priority=priority))
    drain(scheduler)
    assert order == ["i1", "i2", "b1", "b2"] and scheduler.stats.preempted == 0
    assert all(len(plan.requests) == 1 for plan in fake.plans)  # one running at a time


def test_an_output_that_fed_nothing_still_ends_at_a_commit_point(fake, tokenizer) -> None:
    """max_tokens=1: the one sampled token is never fed, yet the end of the output is where its owner records the
    reply (and what the next turn owes the model)."""
    scheduler = Scheduler(fake, tokenizer)
    r, recorder = request(fake, "one", PROMPTS[2], dataclasses.replace(GREEDY, max_tokens=1))
    scheduler.submit(r)
    drain(scheduler)
    assert len(recorder.final.token_ids) == 1
    assert recorder.commits == [PROMPTS[2], []] and r.state.tokens == PROMPTS[2]


def test_prefix_checkpoints_cut_the_input_at_each_multiple_and_are_commit_points(fake, tokenizer) -> None:
    """With `checkpoint_every`, prefill chunks end at each multiple of it (counted from the sequence's start, a
    cached prefix included), and each is a commit point with the input fed since the last."""
    scheduler = Scheduler(fake, tokenizer, token_budget=100)
    r, recorder = request(fake, "ckpt", PROMPTS[0][:250], dataclasses.replace(GREEDY, max_tokens=2),
                          checkpoint_every=64)
    r.state.tokens.extend([3] * 10)  # as if 10 tokens came from the cache
    r.state.commit()
    scheduler.submit(r)
    drain(scheduler)
    fed = [len(plan.prefills[0].token_ids) for plan in fake.plans if plan.prefills]
    assert fed == [54, 64, 64, 64, 4]
    assert [len(c) for c in recorder.commits] == [54, 64, 64, 64, 4, 1]  # then the end of the input, the output
    assert sum(recorder.commits[:5], []) == PROMPTS[0][:250]


def test_abort_returns_partial_output_and_commits_nothing_of_it(fake, tokenizer) -> None:
    scheduler = Scheduler(fake, tokenizer)
    r, recorder = request(fake, "a", PROMPTS[1], forced([5], max_tokens=50), commit_every=4)
    scheduler.submit(r)
    for _ in range(7):
        scheduler.step()
    assert scheduler.abort("a") and not scheduler.abort("unknown")
    drain(scheduler)
    final = recorder.final
    assert final.finish_reason == FinishReason.ABORT and final.discard_state and 0 < len(final.token_ids) < 50
    assert recorder.commits == [PROMPTS[1], [5] * 4]  # the input and the mid-output commit; nothing after it


def test_abort_is_per_tenant_and_a_waiting_request_ends_without_running(fake, tokenizer) -> None:
    scheduler = Scheduler(fake, tokenizer, max_running=1)
    first, _ = request(fake, "x", PROMPTS[2], forced([5], max_tokens=5), tenant="acme")
    waiting, waiting_events = request(fake, "x", PROMPTS[2], forced([5], max_tokens=5), tenant="globex")
    scheduler.submit(first)
    scheduler.submit(waiting)
    scheduler.step()
    assert not scheduler.abort("x", tenant="initech") and scheduler.abort("x", tenant="globex")
    drain(scheduler)
    final = waiting_events.final
    assert final.finish_reason == FinishReason.ABORT and final.token_ids == [] and not final.discard_state
    assert waiting.state.tokens == [] and waiting_events.commits == []
    assert all(waiting not in plan.requests for plan in fake.plans)


def test_interactive_requests_go_first_and_the_queue_pushes_back(fake, tokenizer) -> None:
    scheduler = Scheduler(fake, tokenizer, max_running=1, max_waiting=2)
    batch, batch_events = request(fake, "batch", PROMPTS[2], forced([4], max_tokens=2), priority=BATCH)
    interactive, interactive_events = request(fake, "interactive", PROMPTS[2], forced([4], max_tokens=2))
    scheduler.submit(batch)
    scheduler.submit(interactive)
    with pytest.raises(Overloaded):
        scheduler.submit(request(fake, "third", PROMPTS[2], forced([4], max_tokens=2))[0])
    scheduler.step()
    assert interactive_events.events and not batch_events.events
    drain(scheduler)
    assert batch_events.final.finish_reason == FinishReason.LENGTH


def test_bad_requests_are_refused_at_the_door_and_a_failing_pass_fails_only_its_requests(fake, tokenizer) -> None:
    scheduler = Scheduler(fake, tokenizer)
    other = FakeRunner(dataclasses.replace(SMALL, window_size=16))
    for bad in (request(fake, "x", [], forced([6]))[0], request(fake, "x", [1, 10_000], forced([6]))[0],
                Request("x", other.new_state(), [1, 2], forced([6]), print)):
        with pytest.raises(ValueError):
            scheduler.submit(bad)
    doomed, doomed_events = request(fake, "doomed", PROMPTS[2], forced([6], max_tokens=3))
    scheduler.submit(doomed)
    fake.fail_with = RuntimeError("device lost")
    scheduler.step()
    assert doomed_events.final.finish_reason == FinishReason.ERROR and doomed_events.final.discard_state
    assert "device lost" in doomed_events.final.error
    assert isinstance(doomed_events.final.failure(), RuntimeError) and not doomed_events.final.unavailable
    # The engine's own failure (a rank of the replica gone) fails its requests as unavailable: retry elsewhere.
    lost, lost_events = request(fake, "lost", PROMPTS[2], forced([6], max_tokens=3))
    scheduler.submit(lost)
    fake.fail_with = ReplicaBroken("rank 1 is gone")
    scheduler.step()
    assert lost_events.final.unavailable and isinstance(lost_events.final.failure(), EngineUnavailable)
    assert status_of(lost_events.final.failure()) == grpc.StatusCode.UNAVAILABLE
    fake.fail_with = None
    good, good_events = request(fake, "good", PROMPTS[2], forced([6], max_tokens=3))
    scheduler.submit(good)
    drain(scheduler)
    assert good_events.final.finish_reason == FinishReason.LENGTH


def test_the_engine_thread_serves_submissions(fake, tokenizer) -> None:
    scheduler = Scheduler(fake, tokenizer)
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(stop,), daemon=True)
    thread.start()
    done = threading.Event()
    recorder = Recorder()

    def on_event(event) -> None:
        recorder(event)
        if isinstance(event, Finished):
            done.set()

    scheduler.submit(Request("t", fake.new_state(), PROMPTS[1], forced([3], max_tokens=4), on_event))
    assert done.wait(60)
    stop.set()
    thread.join(10)
    assert recorder.final.token_ids == [3] * 4 and scheduler.load == {"waiting": 0, "running": 0}


def test_admission_by_kv_budget(fake, tokenizer) -> None:
    probe = Scheduler(fake, tokenizer)
    first, first_events = request(fake, "first", PROMPTS[1], forced([3], max_tokens=4))
    one_request = probe._bytes_at_end(first)
    scheduler = Scheduler(fake, tokenizer, kv_budget_bytes=int(1.5 * one_request))
    second, second_events = request(fake, "second", PROMPTS[1], forced([3], max_tokens=4))
    scheduler.submit(first)
    scheduler.submit(second)
    most_running = 0
    while scheduler.step():
        most_running = max(most_running, len(scheduler.running))
    assert most_running == 1  # the second waited for the first's bytes to come back
    assert first_events.final.finish_reason == second_events.final.finish_reason == FinishReason.LENGTH
    roomy = Scheduler(fake, tokenizer, kv_budget_bytes=3 * one_request)
    for name in ("a", "b"):
        roomy.submit(request(fake, name, PROMPTS[1], forced([3], max_tokens=4))[0])
    roomy.step()
    assert len(roomy.running) == 2


def test_interactive_requests_preempt_batch_work_which_then_resumes(fake, tokenizer) -> None:
    scheduler = Scheduler(fake, tokenizer, max_running=1)
    batch, batch_events = request(fake, "batch", PROMPTS[1], dataclasses.replace(GREEDY, max_tokens=12),
                                  priority=BATCH)
    scheduler.submit(batch)
    for _ in range(4):
        scheduler.step()  # the batch request is decoding
    interactive, interactive_events = request(fake, "interactive", PROMPTS[2], forced([5], max_tokens=3))
    scheduler.submit(interactive)
    while not interactive_events.finished:
        scheduler.step()
        assert not batch_events.finished  # paused while the interactive one ran
        assert batch not in fake.plans[-1].requests
    drain(scheduler)
    assert scheduler.stats.preempted == 1
    final = batch_events.final
    # it continued exactly where it stopped: the reply and the state of an uninterrupted run
    assert final.finish_reason == FinishReason.LENGTH and final.token_ids == alone(fake, PROMPTS[1], [0] * 12)
    assert batch.state.tokens == PROMPTS[1] + final.token_ids[:-1]


def test_the_context_bounds_input_and_output_and_prefill_only_requests_sample_nothing(tokenizer) -> None:
    runner = FakeRunner(dataclasses.replace(SMALL, max_seq_len=64))
    scheduler = Scheduler(runner, tokenizer, token_budget=16)
    too_long, too_long_events = request(runner, "too-long", list(range(2, 66)), GREEDY)
    unbounded, unbounded_events = request(runner, "unbounded", list(range(2, 12)), GREEDY)
    append, append_events = request(runner, "append", list(range(2, 66)), GREEDY, prefill_only=True)
    for r in (too_long, unbounded, append):
        scheduler.submit(r)
    drain(scheduler)
    assert too_long_events.final.finish_reason == FinishReason.ERROR and "context of 64" in too_long_events.final.error
    assert all(too_long not in plan.requests for plan in runner.plans)
    # without max_tokens the output ends where the context does (the last sampled token is never fed)
    assert unbounded_events.final.finish_reason == FinishReason.LENGTH
    assert len(unbounded_events.final.token_ids) == 54 and unbounded.state.num_tokens == 63
    # an append fills the context in committed chunks and samples nothing
    final = append_events.final
    assert final.finish_reason == FinishReason.STOP and final.token_ids == [] and final.sequence_tokens == 64
    assert append_events.commits == [list(range(2, 66))] and append.state.committed == 64
    chunks = [len(c.token_ids) for p in runner.plans for c in p.prefills if c.request is append]
    assert sum(chunks) == 64 and max(chunks) <= 16


def test_commit_points_and_a_failing_commit_fails_only_its_request(fake, tokenizer) -> None:
    scheduler = Scheduler(fake, tokenizer)
    params = dataclasses.replace(GREEDY, max_tokens=11)
    committing, committing_events = request(fake, "committing", PROMPTS[1], params, commit_every=4)
    refused, refused_events = request(fake, "refused", PROMPTS[2], forced([3], max_tokens=5))
    refused.on_commit = lambda tokens: (_ for _ in ()).throw(OSError("the store is down"))
    scheduler.submit(committing)
    scheduler.submit(refused)
    drain(scheduler)
    tokens = committing_events.final.token_ids
    # the input, every 4 fed output tokens, then the rest fed (the last sample never is)
    assert committing_events.commits == [PROMPTS[1], tokens[:4], tokens[4:8], tokens[8:10]]
    final = refused_events.final
    assert final.finish_reason == FinishReason.ERROR and "the store is down" in final.error
    assert final.token_ids == [] and final.discard_state


@pytest.mark.parametrize("wrong", [False, True])
def test_speculative_drafts_never_change_the_reply(fake, tokenizer, wrong) -> None:
    params = dataclasses.replace(GREEDY, max_tokens=12)
    plain = Scheduler(fake, tokenizer)
    expected = [request(fake, f"r{i}", prompt, params) for i, prompt in enumerate(PROMPTS)]
    for r, _ in expected:
        plain.submit(r)
    plain_steps = drain(plain)
    fake.wrong_drafts = wrong
    speculative = Scheduler(fake, tokenizer, drafter=MtpDrafter(fake))
    runs = [request(fake, f"r{i}", prompt, params, commit_every=3) for i, prompt in enumerate(PROMPTS)]
    for r, _ in runs:
        speculative.submit(r)
    steps = drain(speculative)
    for prompt, (r, recorder), (_, plain_recorder) in zip(PROMPTS, runs, expected):
        final = recorder.final
        assert final.token_ids == plain_recorder.final.token_ids and r.state.tokens == prompt + final.token_ids[:-1]
        assert final.draft_tokens > 0 and final.accepted_draft_tokens == (0 if wrong else final.draft_tokens)
    assert (steps == plain_steps) if wrong else (steps < plain_steps)
