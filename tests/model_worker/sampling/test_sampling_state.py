"""SamplingState: token bookkeeping, rollback, and snapshot/restore continuing the same stream."""

from __future__ import annotations

import base64
import json

import pytest
import torch

from model_worker.sampling import InvalidSnapshot, Sampler, SamplingParams, SamplingState

VOCAB = 64


def _fake_model_logits(state: SamplingState) -> torch.Tensor:
    """Deterministic logits that depend on the history, like a real model's would."""
    history = (
        sum(state.prompt_token_ids) * 31
        + sum(state.output_token_ids) * 17
        + state.num_output_tokens
    ) % 10_007
    gen = torch.Generator().manual_seed(history)
    return torch.randn(1, VOCAB, generator=gen) * 2.0


def _generate(state: SamplingState, num_steps: int) -> list[int]:
    sampler = Sampler()
    tokens = []
    for _ in range(num_steps):
        token = int(sampler.sample(_fake_model_logits(state), [state]).token_ids[0])
        state.append(token)
        tokens.append(token)
    return tokens


def test_append_and_rollback_keep_counts_in_sync() -> None:
    state = SamplingState(SamplingParams(), prompt_token_ids=[1, 2])
    state.extend([5, 6, 5, 7])
    assert state.output_token_counts == {5: 2, 6: 1, 7: 1}
    state.rollback(2)
    assert state.output_token_ids == [5, 6] and state.output_token_counts == {5: 1, 6: 1}
    state.rollback(0)
    assert state.num_output_tokens == 2
    with pytest.raises(ValueError, match="cannot roll back 3 of 2"):
        state.rollback(3)


def test_counts_are_derived_from_given_output_ids() -> None:
    state = SamplingState(SamplingParams(), output_token_ids=[4, 4, 9])
    assert state.output_token_counts == {4: 2, 9: 1}


def test_rollback_rewinds_randomness() -> None:
    state = SamplingState(SamplingParams(seed=11), prompt_token_ids=[3])
    first = _generate(state, 6)
    state.rollback(3)
    assert _generate(state, 3) == first[3:]


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(seed=2024, temperature=0.9, top_p=0.95),
        SamplingParams(
            temperature=1.3,
            top_k=20,
            repetition_penalty=1.2,
            frequency_penalty=0.4,
            presence_penalty=0.3,
        ),
        SamplingParams(seed=5, min_p=0.05, logit_bias={3: 2.5}),
    ],
    ids=["seeded-top-p", "unseeded-penalties", "min-p-bias"],
)
def test_snapshot_mid_stream_restores_identical_continuation(params: SamplingParams) -> None:
    state = SamplingState(params, prompt_token_ids=[10, 11, 12, 10])
    _generate(state, 7)
    snapshot = state.snapshot()
    continuation = _generate(state, 25)
    restored = SamplingState.restore(snapshot)
    assert restored.output_token_ids == state.output_token_ids[:7]
    assert _generate(restored, 25) == continuation
    assert restored == state


def test_snapshot_is_canonical_json_without_pickle() -> None:
    state = SamplingState(
        SamplingParams(seed=3, logit_bias={5: 1.0, 2: -1.0}), prompt_token_ids=[1, 2, 3]
    )
    state.extend([7, 8])
    data = state.snapshot()
    assert data == SamplingState.restore(data).snapshot()  # same state, same bytes
    doc = json.loads(data)
    assert doc["format"] == "sampling-state/1"
    assert base64.b64decode(doc["output_token_ids"]) == (7).to_bytes(4, "little") + (8).to_bytes(
        4, "little"
    )
    assert doc["params"]["logit_bias"] == [[2, -1.0], [5, 1.0]]


def test_snapshot_keeps_random_seed_of_unseeded_request() -> None:
    state = SamplingState(SamplingParams())
    restored = SamplingState.restore(state.snapshot())
    assert restored.rng == state.rng and restored.next_uniform() == state.next_uniform()


def _corrupt(field: str, value: object) -> bytes:
    doc = json.loads(SamplingState(SamplingParams(seed=1), prompt_token_ids=[1]).snapshot())
    doc[field] = value
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80not json", "not valid JSON"),
        (b"[1, 2]", "expected snapshot format"),
        (_corrupt("format", "sampling-state/0"), "expected snapshot format"),
        (_corrupt("rng", "!!!"), "malformed snapshot field"),
        (
            _corrupt("prompt_token_ids", base64.b64encode(b"\x01\x02\x03").decode()),
            "not a multiple of 4",
        ),
        (_corrupt("params", {"top_p": 3.0}), "invalid params: top_p"),
        (_corrupt("params", {"bogus": 1}), "invalid params: unknown"),
        (_corrupt("params", None), "malformed snapshot field"),
    ],
)
def test_restore_rejects_malformed_snapshots(data: bytes, message: str) -> None:
    with pytest.raises(InvalidSnapshot, match=message):
        SamplingState.restore(data)


def test_prompt_ids_unique_is_cached() -> None:
    state = SamplingState(SamplingParams(), prompt_token_ids=[5, 1, 5, 3])
    assert state.prompt_ids_unique().tolist() == [1, 3, 5]
    assert state.prompt_ids_unique() is state.prompt_ids_unique()
