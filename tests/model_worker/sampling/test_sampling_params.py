"""SamplingParams: defaults, normalisation, validation messages and the dict round trip."""

from __future__ import annotations

import dataclasses

import pytest

from model_worker.sampling import InvalidSamplingParams, SamplingParams


def test_defaults_match_deepseek_generation_config() -> None:
    params = SamplingParams()
    assert (params.temperature, params.top_p, params.top_k, params.min_p) == (1.0, 1.0, 0, 0.0)
    assert params.repetition_penalty == 1.0 and params.logit_bias == {}
    assert not params.is_greedy and not params.top_k_enabled
    assert not params.include_stop_str_in_output and not params.ignore_eos
    assert params.max_tokens is None and params.seed is None


@pytest.mark.parametrize(
    ("temperature", "greedy"), [(0.0, True), (1e-6, True), (1e-3, False), (1.0, False)]
)
def test_is_greedy(temperature: float, greedy: bool) -> None:
    assert SamplingParams(temperature=temperature).is_greedy is greedy


@pytest.mark.parametrize(("top_k", "enabled"), [(-1, False), (0, False), (1, True), (50, True)])
def test_top_k_disabled_values(top_k: int, enabled: bool) -> None:
    assert SamplingParams(top_k=top_k).top_k_enabled is enabled


def test_normalises_sequences_and_copies_logit_bias() -> None:
    bias = {3: 1.5}
    lists: dict[str, object] = {"stop": ["a", "bc"], "stop_token_ids": [7, 8]}
    params = SamplingParams(logit_bias=bias, **lists)  # type: ignore[arg-type]
    assert params.stop == ("a", "bc") and params.stop_token_ids == (7, 8)
    bias[4] = 2.0
    assert params.logit_bias == {3: 1.5}
    assert SamplingParams(stop="</s>").stop == ("</s>",)  # type: ignore[arg-type]


def test_hashable_despite_dict_field() -> None:
    a = SamplingParams(logit_bias={1: 1.0}, seed=3)
    b = SamplingParams(logit_bias={1: 1.0}, seed=3)
    assert a == b and hash(a) == hash(b)
    assert a != SamplingParams(logit_bias={1: 2.0}, seed=3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -0.1}, "temperature must be >= 0"),
        ({"temperature": float("nan")}, "temperature must be finite"),
        ({"temperature": True}, "temperature must be a number"),
        ({"temperature": "1"}, "temperature must be a number"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.01}, r"top_p must be in \(0, 1\]"),
        ({"top_k": -2}, "top_k must be -1 or 0"),
        ({"top_k": 2.0}, "top_k must be an int"),
        ({"min_p": 1.5}, r"min_p must be in \[0, 1\]"),
        ({"repetition_penalty": 0.0}, r"repetition_penalty must be in \(0, 2\]"),
        ({"repetition_penalty": 2.5}, r"repetition_penalty must be in \(0, 2\]"),
        ({"frequency_penalty": 2.5}, r"frequency_penalty must be in \[-2, 2\]"),
        ({"presence_penalty": -2.5}, r"presence_penalty must be in \[-2, 2\]"),
        ({"logit_bias": {-1: 1.0}}, "logit_bias token ids must be >= 0"),
        ({"logit_bias": {"5": 1.0}}, "logit_bias token id must be an int"),
        ({"logit_bias": {5: 100.5}}, r"logit_bias\[5\] must be in \[-100, 100\]"),
        ({"logit_bias": {5: float("inf")}}, r"logit_bias\[5\] must be finite"),
        ({"logit_bias": [1, 2]}, "logit_bias must be a mapping"),
        ({"seed": 1 << 64}, "seed must fit in 64 bits"),
        ({"seed": 1.5}, "seed must be an int"),
        ({"stop_token_ids": (-3,)}, "stop_token_ids token ids must be >= 0"),
        ({"stop": ("ok", "")}, "stop strings must be non-empty"),
        ({"stop": ("ok", 3)}, "stop strings must be non-empty strings"),
        ({"max_tokens": 0}, "max_tokens must be >= 1"),
        ({"ignore_eos": "yes"}, "ignore_eos must be a bool"),
        ({"include_stop_str_in_output": 1}, "include_stop_str_in_output must be a bool"),
    ],
)
def test_invalid_values_raise_clear_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidSamplingParams, match=message):
        SamplingParams(**kwargs)  # type: ignore[arg-type]


def test_invalid_params_error_is_a_value_error() -> None:
    assert issubclass(InvalidSamplingParams, ValueError)


def test_boundary_values_are_accepted() -> None:
    SamplingParams(
        temperature=0,
        top_p=1,
        top_k=-1,
        min_p=1.0,
        repetition_penalty=2.0,
        frequency_penalty=-2.0,
        presence_penalty=2.0,
        logit_bias={0: -100, 1: 100},
        seed=-(1 << 63),
        max_tokens=1,
    )


def test_validate_with_vocab_size_checks_token_ids() -> None:
    params = SamplingParams(logit_bias={10: 1.0}, stop_token_ids=(3,))
    params.validate(vocab_size=11)
    with pytest.raises(
        InvalidSamplingParams, match="logit_bias token id 10 is outside the vocabulary"
    ):
        params.validate(vocab_size=10)
    with pytest.raises(InvalidSamplingParams, match="stop_token_ids token id 3 is outside"):
        SamplingParams(stop_token_ids=(3,)).validate(vocab_size=3)


def test_replace_revalidates() -> None:
    with pytest.raises(InvalidSamplingParams, match="top_p"):
        dataclasses.replace(SamplingParams(), top_p=0.0)


def test_dict_round_trip_and_unknown_keys() -> None:
    params = SamplingParams(
        temperature=0.7,
        top_k=20,
        logit_bias={9: -1.5, 2: 3.0},
        seed=42,
        stop=("x",),
        stop_token_ids=(1,),
    )
    data = params.to_dict()
    assert data["logit_bias"] == [[2, 3.0], [9, -1.5]]
    assert SamplingParams.from_dict(data) == params
    with pytest.raises(InvalidSamplingParams, match="unknown sampling parameters: best_of"):
        SamplingParams.from_dict({**data, "best_of": 2})
    with pytest.raises(InvalidSamplingParams, match="logit_bias pairs"):
        SamplingParams.from_dict({"logit_bias": [[1, 2, 3]]})
