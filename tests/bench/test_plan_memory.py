"""bench.plan_memory: the meta model's weights equal the official checkpoints' bytes at size 1; at N ranks every split
parameter divides exactly and the replicated ones are held N times; the models of the planned sizes build; a
sequence's state costs the same bytes per token on every rank at every size (it is replicated, not split)."""

from __future__ import annotations

import functools

import pytest

from bench.kv_bytes import growth_per_token
from bench.plan_memory import (
    CHECKPOINT_BYTES,
    PLANS,
    build_meta,
    replicated_bytes,
    split_problems,
    state_growth,
    state_nbytes,
    weight_bytes,
)
from model_worker.config import load_config
from model_worker.model import DeepseekV4
from model_worker.parallel.shard import split_dim


@functools.cache
def meta(name: str, rank: int = 0, size: int = 1) -> DeepseekV4:
    """One meta model per split for the whole module (they hold no memory)."""
    return build_meta(load_config(name), rank, size)


@pytest.mark.parametrize("name", ["flash", "pro"])
def test_size_one_weights_equal_the_checkpoint_bytes(name: str) -> None:
    assert weight_bytes(meta(name))["total"] == CHECKPOINT_BYTES[name]


@pytest.mark.parametrize(("name", "size"), [("flash", 4), ("flash", 8), ("pro", 16)])
def test_split_parameters_divide_exactly_over_ranks(name: str, size: int) -> None:
    full = meta(name)
    held: dict[str, int] = {}
    for rank in range(size):
        for param_name, param in meta(name, rank, size).named_parameters():
            held[param_name] = held.get(param_name, 0) + param.numel() * param.element_size()
    wrong = [param_name for param_name, param in full.named_parameters()
             if held[param_name] != param.numel() * param.element_size() * (1 if split_dim(param_name) is not None
                                                                             else size)]
    assert not wrong, wrong[:6]
    total = weight_bytes(full)["total"]
    assert sum(held.values()) == total + (size - 1) * replicated_bytes(full)


def test_the_checkpoint_split_accepts_every_planned_size() -> None:
    """No FP8 slice starts inside a 128-row scale block (the loader would reject it)."""
    for plan in PLANS:
        assert split_problems(load_config(plan.model), plan.tp) == [], plan.name


def test_planned_sizes_build_and_pro_stops_at_its_output_groups() -> None:
    for plan in PLANS:
        config = load_config(plan.model)
        last = meta(plan.model, plan.tp - 1, plan.tp)
        attn = last.layers[-1].attn
        assert attn.n_local_heads * plan.tp == config.n_heads
        assert attn.n_local_groups * plan.tp == config.o_groups
        assert last.layers[-1].ffn.experts.w13.shape[0] * plan.tp == config.n_routed_experts
    with pytest.raises(ValueError, match="o_groups"):  # why 32 Pro ranks need data-parallel attention or replicas
        build_meta(load_config("pro"), 0, 32)


@pytest.mark.parametrize(("name", "sizes"), [("flash", (1, 4, 8)), ("pro", (1, 16))])
def test_state_bytes_are_the_same_at_every_tp_size(name: str, sizes: tuple[int, ...]) -> None:
    lengths = (256, 512)  # whole CSA pages (HCA pages span 8,192 tokens: the exact slope below covers them)
    per_size = {size: [state_nbytes(meta(name, size - 1, size), n, "cpu") for n in lengths] for size in sizes}
    assert len(set(map(tuple, per_size.values()))) == 1, per_size
    small, large = per_size[1]
    assert large > small


def test_measured_bytes_per_token_equal_the_layouts_growth() -> None:
    """The slope the tables use (Flash; Pro's is checked by the script against bench.kv_bytes at 128K and 1M)."""
    config = load_config("flash")
    per_token, fixed = state_growth(config)
    assert per_token == growth_per_token(build_meta(config).layout)["total"] > 0
    assert fixed > 0
