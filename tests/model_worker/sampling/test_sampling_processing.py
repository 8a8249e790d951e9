"""Logits processing on hand-built logits: greedy, masks, penalties, bias, inverse-CDF draw."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from model_worker.sampling import InvalidSamplingParams, Sampler, SamplingParams, SamplingState
from model_worker.sampling.ops import sample_inverse_cdf

INF = math.inf


def _state(
    prompt: tuple[int, ...] = (), output: tuple[int, ...] = (), **kwargs: Any
) -> SamplingState:
    params = SamplingParams(**kwargs)
    return SamplingState(params, prompt_token_ids=prompt, output_token_ids=list(output))


def _process(logits: list[float], state: SamplingState) -> torch.Tensor:
    return Sampler().process_logits(torch.tensor([logits]), [state])[0]


def _kept(processed: torch.Tensor) -> list[int]:
    return torch.isfinite(processed).nonzero().flatten().tolist()


def _log_probs(probs: list[float]) -> list[float]:
    return [math.log(p) for p in probs]


def test_greedy_is_exact_argmax_with_first_index_on_ties() -> None:
    logits = torch.tensor([[0.1, 2.0, -1.0, 2.0], [5.0, 4.0, 3.0, 2.0], [-3.0, -2.0, -2.5, -9.0]])
    states = [_state(temperature=0.0, top_k=1, top_p=0.1) for _ in range(3)]
    out = Sampler().sample(logits, states)
    assert out.token_ids.tolist() == [1, 0, 1]
    expected = torch.log_softmax(logits, dim=-1)[torch.arange(3), out.token_ids]
    torch.testing.assert_close(out.logprobs, expected)


def test_temperature_scales_logits() -> None:
    processed = _process([1.0, -2.0, 4.0], _state(temperature=0.5))
    torch.testing.assert_close(processed, torch.tensor([2.0, -4.0, 8.0]))


def test_top_k_keeps_k_highest_and_ties() -> None:
    assert _kept(_process([1.0, 3.0, 2.0, 5.0, 4.0], _state(top_k=2))) == [3, 4]
    assert _kept(_process([1.0, 3.0, 3.0, 5.0, 0.0], _state(top_k=2))) == [1, 2, 3]
    assert _kept(_process([1.0, 3.0], _state(top_k=10))) == [0, 1]


def test_top_p_keeps_smallest_prefix_reaching_mass() -> None:
    logits = _log_probs([0.1, 0.5, 0.15, 0.25])
    assert _kept(_process(logits, _state(top_p=0.7))) == [1, 3]
    assert _kept(_process(logits, _state(top_p=0.8))) == [1, 2, 3]
    assert _kept(_process(logits, _state(top_p=0.3))) == [1]


def test_top_p_one_keeps_vanishing_probabilities() -> None:
    logits = [0.0] + [-40.0] * 1000  # tail mass ~4e-15 per token: a float32 cumsum hits 1.0 first
    assert len(_kept(_process(logits, _state(top_p=1.0, top_k=1001)))) == 1001


def test_top_p_applies_after_top_k_renormalisation() -> None:
    logits = _log_probs([0.4, 0.3, 0.2, 0.1])
    # Alone, top_p=0.75 keeps 3 tokens (mass before the 3rd is 0.7); after top-3 renormalises to
    # [4/9, 3/9, 2/9] the mass before the 3rd is 7/9 >= 0.75, so only 2 survive.
    assert _kept(_process(logits, _state(top_p=0.75))) == [0, 1, 2]
    assert _kept(_process(logits, _state(top_k=3, top_p=0.75))) == [0, 1]


def test_min_p_drops_tokens_below_fraction_of_max() -> None:
    logits = _log_probs([0.5, 0.3, 0.15, 0.05])
    assert _kept(_process(logits, _state(min_p=0.2))) == [0, 1, 2]
    assert _kept(_process(logits, _state(min_p=0.61))) == [0]


def test_min_p_applies_before_top_p_like_vllm() -> None:
    logits = _log_probs([0.4, 0.3, 0.2, 0.1])
    # top-p alone keeps 3 tokens (mass before the 3rd is 0.7 < 0.75); min-p first drops 0.1 and
    # renormalises, so the mass before the 3rd becomes 0.78 and top-p then keeps only 2.
    assert _kept(_process(logits, _state(top_p=0.75))) == [0, 1, 2]
    assert _kept(_process(logits, _state(min_p=0.3, top_p=0.75))) == [0, 1]


def test_temperature_changes_which_tokens_pass_top_p() -> None:
    logits = _log_probs([0.6, 0.3, 0.1])
    # At temperature 0.5 the probabilities become [0.78, 0.20, 0.02].
    assert _kept(_process(logits, _state(top_p=0.75, temperature=1.0))) == [0, 1]
    assert _kept(_process(logits, _state(top_p=0.75, temperature=0.5))) == [0]


def test_repetition_penalty_over_prompt_and_output() -> None:
    state = _state(prompt=(0, 0, 4), output=(1, 0), repetition_penalty=2.0, temperature=0.0)
    processed = _process([3.0, -2.0, 2.0, 0.5, -1.0], state)
    # Token 0 appears three times but is penalised once; token 3 was never seen.
    torch.testing.assert_close(processed, torch.tensor([1.5, -4.0, 2.0, 0.5, -2.0]))
    assert (
        Sampler().sample(torch.tensor([[3.0, -2.0, 2.0, 0.5, -1.0]]), [state]).token_ids.item() == 2
    )


def test_frequency_and_presence_penalties_count_output_only() -> None:
    state = _state(
        prompt=(3,), output=(1, 1, 2), frequency_penalty=0.5, presence_penalty=0.25, temperature=0.0
    )
    processed = _process([1.0, -2.0, 2.0, 0.5], state)
    torch.testing.assert_close(processed, torch.tensor([1.0, -2.0 - 1.25, 2.0 - 0.75, 0.5]))


def test_negative_penalties_encourage_repeats() -> None:
    processed = _process([0.0, 0.0], _state(output=(1,), presence_penalty=-1.0, temperature=0.0))
    torch.testing.assert_close(processed, torch.tensor([0.0, 1.0]))


def test_logit_bias_forces_and_bans_tokens() -> None:
    vocab = 50
    forced = [_state(seed=seed, logit_bias={7: 100.0}) for seed in range(200)]
    out = Sampler().sample(torch.zeros(200, vocab), forced)
    assert out.token_ids.tolist() == [7] * 200
    banned = _state(temperature=0.0, logit_bias={2: -100.0})
    assert Sampler().sample(torch.tensor([[1.0, 2.0, 30.0, 0.0]]), [banned]).token_ids.item() == 1


def test_logit_bias_outside_vocab_raises() -> None:
    with pytest.raises(InvalidSamplingParams, match="outside the vocabulary"):
        Sampler().sample(torch.zeros(1, 4), [_state(logit_bias={4: 1.0})])


def test_greedy_rows_skip_truncation_and_report_temperature_one_logprobs() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    out = Sampler().sample(logits, [_state(temperature=0.0, top_k=1, min_p=0.9)])
    assert _kept(Sampler().process_logits(logits, [_state(temperature=0.0, top_k=1)])[0]) == [
        0,
        1,
        2,
    ]
    torch.testing.assert_close(out.logprobs, torch.log_softmax(logits, -1)[:, 0])


def test_sampled_logprob_is_from_processed_distribution() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -5.0]])
    state = _state(seed=1, temperature=0.5, top_k=2)
    out = Sampler().sample(logits, [state])
    expected = torch.log_softmax(torch.tensor([4.0, 2.0]), -1)[int(out.token_ids[0])]
    torch.testing.assert_close(out.logprobs[0], expected)


def test_input_is_not_mutated_and_low_precision_is_accepted() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    original = logits.clone()
    Sampler().sample(
        logits,
        [
            _state(
                temperature=0.5, top_k=1, logit_bias={0: 5.0}, repetition_penalty=1.5, prompt=(2,)
            )
        ],
    )
    assert torch.equal(logits, original)
    out = Sampler().sample(logits.to(torch.bfloat16), [_state(temperature=0.0)])
    assert out.token_ids.tolist() == [2] and out.logprobs.dtype == torch.float32


def test_shape_errors_and_empty_batch() -> None:
    with pytest.raises(ValueError, match=r"\[batch, vocab\]"):
        Sampler().sample(torch.zeros(4), [])
    with pytest.raises(ValueError, match="2 rows but 1 states"):
        Sampler().sample(torch.zeros(2, 4), [_state()])
    out = Sampler().sample(torch.zeros(0, 4), [])
    assert out.token_ids.shape == (0,) and out.logprobs.shape == (0,)


def test_inverse_cdf_boundaries_never_pick_zero_probability_tokens() -> None:
    probs = torch.tensor([[0.25, 0.0, 0.75, 0.0]]).expand(6, 4)
    uniforms = torch.tensor([0.0, 0.2499, 0.25, 0.5, 1 - 2**-53, 1.0], dtype=torch.float64)
    # u = 1.0 is outside [0, 1) but exercises the round-up fallback to the last token with mass.
    assert sample_inverse_cdf(probs, uniforms).tolist() == [0, 0, 2, 2, 2, 2]
    unnormalised = torch.tensor([[0.0, 2.0, 6.0]])
    assert sample_inverse_cdf(unnormalised, torch.tensor([0.26], dtype=torch.float64)).tolist() == [
        2
    ]


class _OnlyEven:
    """A grammar that allows even token ids only, and records what it was fed."""

    def __init__(self, vocab: int) -> None:
        self.vocab, self.fed = vocab, []

    def allowed(self) -> torch.Tensor:
        return torch.arange(self.vocab) % 2 == 0

    def accept(self, token_id: int) -> None:
        if token_id % 2:
            raise ValueError(f"odd token {token_id}")
        self.fed.append(token_id)

    def rollback(self, num_tokens: int) -> None:
        del self.fed[len(self.fed) - num_tokens :]


def test_a_constraint_masks_before_everything_and_follows_the_output() -> None:
    logits = torch.tensor([[0.0, 9.0, 1.0, 8.0], [0.0, 9.0, 1.0, 8.0]])
    grammar = _OnlyEven(4)
    constrained = SamplingState(SamplingParams(temperature=0.0, logit_bias={3: 50.0}), constraint=grammar)
    free = _state(temperature=0.0)
    out = Sampler().sample(logits, [constrained, free])
    assert out.token_ids.tolist() == [2, 1]  # the other row of the batch is untouched
    constrained.append(2)
    constrained.append(0)
    constrained.rollback(1)
    assert grammar.fed == [2] and constrained.output_token_ids == [2]
    with pytest.raises(ValueError, match="odd"):
        constrained.append(3)
    assert constrained.output_token_ids == [2]  # a rejected token is not taken


def test_top_logprobs_are_the_best_alternatives_of_the_sampled_distribution() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [0.0, 3.0, 1.0, 2.0]])
    states = [_state(temperature=0.0, top_logprobs=2), _state(temperature=0.0)]
    out = Sampler().sample(logits, states)
    expected = torch.log_softmax(logits[0], dim=-1)
    assert [t for t, _ in out.top_logprobs[0]] == [1, 3] and out.top_logprobs[1] == []
    assert out.top_logprobs[0][0][1] == pytest.approx(expected[1].item())
    truncated = _state(temperature=1.0, top_k=1, top_logprobs=3, seed=0)
    assert [t for t, _ in Sampler().sample(logits[:1], [truncated]).top_logprobs[0]] == [1]  # -inf left out
    with pytest.raises(InvalidSamplingParams, match="top_logprobs"):
        SamplingParams(top_logprobs=21)
