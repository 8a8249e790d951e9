"""Loading one tensor-parallel rank's share of a whole checkpoint: exactly the tensors `shard_state_dict` cuts from
the full model, row slices as views of the memory-mapped shards, a 1/size share of every split parameter, the other
ranks' experts never read, and the fingerprint of the whole checkpoint at every size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from checkpoint_testlib import TP_RANKS, TP_SMALL, assert_same_tensors, one_thread, parameters
from small_config import SMALL

from model_worker.checkpoint import CheckpointError, load_checkpoint, model_fingerprint, write_random_checkpoint
from model_worker.checkpoint.checkpoint_dir import open_checkpoint_dir
from model_worker.checkpoint.layouts import HF_NATIVE, HF_SAVED, expert_param, layout_config
from model_worker.checkpoint.names import parse_expert_name
from model_worker.checkpoint.random_init import random_state_dict
from model_worker.checkpoint.safetensors_io import SafetensorsFile
from model_worker.checkpoint.writer import write_state_dict
from model_worker.model import DeepseekV4
from model_worker.parallel import TensorParallel
from model_worker.parallel.shard import is_block_scale, local_range, shard_state_dict, split_dim


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """TP_SMALL's dense weights in both transformers namings (per-expert tensors, and stacked gate_up/down_proj)."""
    with one_thread():
        dense = random_state_dict(DeepseekV4(layout_config(TP_SMALL, "hf"), quantized=False), 6,
                                  float_dtype=torch.float32)
    return {naming: write_state_dict(dense, TP_SMALL, tmp_path_factory.mktemp(naming), "hf", hf_naming=naming)
            for naming in (HF_SAVED, HF_NATIVE)}


@pytest.mark.parametrize("tp", TP_RANKS, ids=str)
def test_official_rank_share_is_the_sharded_full_model(tp: TensorParallel, tp_official_dir: Path,
                                                       tp_full_state: dict) -> None:
    model, info = load_checkpoint(tp_official_dir, fingerprint=False, tp=tp)
    assert info.split_size is None and len(info.shards) == 3
    assert_same_tensors(parameters(model), shard_state_dict(tp_full_state, tp))


@pytest.mark.parametrize("naming", [HF_SAVED, HF_NATIVE])
def test_transformers_rank_share_is_the_sharded_full_model(naming: str, hf_dirs: dict) -> None:
    full = parameters(load_checkpoint(hf_dirs[naming], fingerprint=False)[0])
    for tp in TP_RANKS:
        model, info = load_checkpoint(hf_dirs[naming], fingerprint=False, tp=tp)
        assert info.naming == naming
        assert_same_tensors(parameters(model), shard_state_dict(full, tp))


def test_row_slices_view_the_map_and_column_slices_copy_only_themselves(tp_official_dir: Path,
                                                                        tp_full_state: dict) -> None:
    ckpt = open_checkpoint_dir(tp_official_dir)
    for tp in TP_RANKS:
        model, _ = load_checkpoint(tp_official_dir, fingerprint=False, tp=tp)
        for name, param in model.named_parameters():
            storage, nbytes = param.untyped_storage(), param.numel() * param.element_size()
            dim = split_dim(name)
            column_slice = dim == 1 and param.shape != tp_full_state[name].shape  # (not a scale block all share)
            if expert_param(name) is not None or column_slice:  # stacked from per-expert tensors, or copied
                assert storage.nbytes() == nbytes, name
                continue
            entry = ckpt.entry(name)
            assert storage.nbytes() == ckpt.files[ckpt.locations[name]].size, f"{name} is not a view of its shard"
            # The view starts at this rank's first row of the tensor in the file: nothing was copied.
            first_row = _first_row(name, tp, tp_full_state) if dim == 0 else 0
            row_bytes = nbytes // param.shape[0] if param.dim() else 0
            assert param.data_ptr() - storage.data_ptr() == entry.begin + first_row * row_bytes, name


def _first_row(name: str, tp: TensorParallel, full: dict[str, torch.Tensor]) -> int:
    weight = full[name[: -len("scale")] + "weight"].shape[0] if is_block_scale(name) else None
    return local_range(name, tuple(full[name].shape), tp, weight)[1]


def test_each_rank_holds_its_share_of_the_split_parameters(tp_official_dir: Path, tp_full_state: dict) -> None:
    split = [name for name in tp_full_state if split_dim(name) is not None and not is_block_scale(name)]
    full_bytes = sum(tp_full_state[n].numel() * tp_full_state[n].element_size() for n in split)
    assert {"embed.weight", "head.weight", "layers.0.ffn.experts.w13", "layers.1.attn.wo_b.weight"} <= set(split)
    for tp in TP_RANKS:
        local = parameters(load_checkpoint(tp_official_dir, fingerprint=False, tp=tp)[0])
        assert sum(local[n].numel() * local[n].element_size() for n in split) * tp.size == full_bytes


def test_other_ranks_experts_are_never_read(tp_official_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[str] = []
    original = SafetensorsFile.tensor
    monkeypatch.setattr(SafetensorsFile, "tensor", lambda self, name: read.append(name) or original(self, name))
    for tp in TP_RANKS:
        read.clear()
        load_checkpoint(tp_official_dir, fingerprint=False, tp=tp)
        first, last = tp.split(TP_SMALL.n_routed_experts, "experts")
        experts = {parse_expert_name(key)[1] for key in read if parse_expert_name(key)}
        assert experts == set(range(first, last)), (tp, sorted(experts))
        assert len(read) == len(set(read)), "a tensor was read twice"


def test_fingerprint_is_the_same_at_every_size(tp_official_dir: Path) -> None:
    whole = model_fingerprint(tp_official_dir)
    for tp in TP_RANKS:
        assert load_checkpoint(tp_official_dir, tp=tp)[1].fingerprint == whole


def test_unaligned_fp8_block_split_is_refused(tmp_path: Path) -> None:
    # 2 output groups of 96 rows (wo_a) over 2 ranks: rank 1 starts at row 96, inside the first 128-row scale block,
    # and ends in the second; no share of the block scales fits it.
    path = write_random_checkpoint(TP_SMALL.replace(o_groups=2, o_lora_rank=96), "official", 1, tmp_path / "odd")
    with pytest.raises(CheckpointError, match=r"2 tensor-parallel ranks.*wo_a\.scale.*128-block"):
        load_checkpoint(path, fingerprint=False, tp=TensorParallel(1, 2))


def test_model_that_does_not_split_is_refused(official_dir: Path) -> None:
    with pytest.raises(CheckpointError, match=r"4 tensor-parallel ranks.*o_groups: 2"):
        load_checkpoint(official_dir, fingerprint=False, tp=TensorParallel(0, 4))
    assert SMALL.o_groups == 2
