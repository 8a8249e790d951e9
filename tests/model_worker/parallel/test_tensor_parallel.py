"""`tiny` split over 2 and 4 tensor-parallel ranks (processes on this machine, gloo) gives the logits of one rank
(relative error <= 1e-4) for prefill, chunked prefill, decode, rollbacks and MTP drafts, with rank 0 driving the
others through ReplicaLeader exactly as the worker does: states mirrored on first use, then trims and token ids."""

from __future__ import annotations

import pytest
import torch

from model_worker.engine.loading import load_model
from model_worker.engine.replica import ModelSpec, ReplicaLeader, open_replica
from model_worker.engine.runner import LocalRunner
from model_worker.model import ForwardBatch

SPEC = ModelSpec(None, "tiny", 0, "reference")


def rel_err(ours: torch.Tensor, full: torch.Tensor) -> float:
    return ((ours - full).norm(dim=-1) / full.norm(dim=-1)).max().item()


@pytest.fixture(scope="module")
def single():
    return LocalRunner(load_model(None, "tiny", 0, "reference"))


def script(runner, ids: torch.Tensor) -> list[torch.Tensor]:
    """One run through everything the engine does with a model runner; the logits it saw, in order."""
    seen = []
    whole = runner.new_state()
    seen.append(runner.forward(ForwardBatch.single(ids, whole, logits="all")).logits)  # past the window and 2 HCA
    chunked, other = runner.new_state(), runner.new_state()
    for first, size in ((0, 100), (100, 1), (101, 150), (251, 49)):  # chunked prefill, mixed with another sequence
        batch = ForwardBatch(torch.cat([ids[first:first + size], ids[:3]]), [size, 3], [chunked, other])
        seen.append(runner.forward(batch).logits)
        chunked.commit()
        other.truncate(0)
    for _ in range(4):  # decode, with a rejected draft rolled back on every step
        token = int(seen[-1][0].argmax())
        seen.append(runner.forward(ForwardBatch.single([token, 7], chunked, logits="all")).logits)
        chunked.truncate(chunked.num_tokens - 1)
        chunked.commit()
    seen.append(runner.draft([chunked], [int(seen[-1][0].argmax())]))
    resumed = runner.new_state()  # a session resumed from the store: a state that arrives whole
    resumed.restore(chunked.snapshot())
    seen.append(runner.forward(ForwardBatch.single([5], resumed)).logits)
    return seen


@pytest.mark.parametrize("size", [2, 4])
def test_logits_equal_one_ranks(single, size):
    ids = torch.randint(0, 129_280, (300,), generator=torch.Generator().manual_seed(size))
    expected = script(single, ids)
    replica = open_replica(SPEC, size)
    try:
        assert isinstance(replica.runner, ReplicaLeader)
        got = script(replica.runner, ids)
    finally:
        replica.close()
    assert [g.shape for g in got] == [e.shape for e in expected]
    for ours, theirs in zip(got, expected):
        assert rel_err(ours, theirs) <= 1e-4
    assert all(p.exitcode == 0 for p in replica.ranks.processes)


class RecordingGroup:
    """A group of one that keeps what rank 0 would send (a unit-test stand-in for the collectives)."""

    size, rank = 2, 0

    def __init__(self) -> None:
        self.sent: list[tuple] = []

    def broadcast(self, value=None):
        self.sent.append(value)
        return value


def test_every_dropped_sequence_is_announced_once(single):
    import gc

    group = RecordingGroup()
    leader = ReplicaLeader(single.model, group)
    first, second = single.new_state(), single.new_state()
    leader.forward(ForwardBatch.single([1, 2], first))
    leader.forward(ForwardBatch.single([3], second))  # this pass takes the (empty) drop list: later drops still count
    del first
    gc.collect()
    third = single.new_state()
    leader.forward(ForwardBatch.single([4], third))
    assert group.sent[-1][3] == [0]  # the first sequence's mirror, freed on the other ranks
    leader.forward(ForwardBatch.single([5], third))
    assert group.sent[-1][3] == []
