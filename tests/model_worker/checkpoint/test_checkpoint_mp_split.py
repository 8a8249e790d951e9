"""DeepSeek convert.py's per-rank files (`model{rank}-mp{N}.safetensors`), as `checkpoint-split` writes them: their
contents follow convert.py, each rank maps only its own file and gets exactly its share of the whole checkpoint,
the split keeps the source's fingerprint, and wrong sizes or changed files fail with a clear error."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from checkpoint_testlib import TP_RANKS, TP_SMALL, assert_same_tensors, copy_checkpoint, logits, parameters

from kernels.ref.formats import dequantize_fp8_blocks
from model_worker.__main__ import main
from model_worker.checkpoint import CheckpointError, load_checkpoint, model_fingerprint, split_checkpoint
from model_worker.checkpoint import fingerprint as fingerprint_module
from model_worker.checkpoint.mp_split import MANIFEST_FILE
from model_worker.checkpoint.safetensors_io import SafetensorsFile, write_safetensors
from model_worker.numerics import REFERENCE
from model_worker.parallel import SINGLE, TensorParallel
from model_worker.parallel.shard import shard_state_dict


@pytest.fixture(scope="module")
def split_dirs(tp_official_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    return {size: split_checkpoint(tp_official_dir, tmp_path_factory.mktemp(f"mp{size}"), size) for size in (2, 4)}


def _expected_share(full: dict[str, torch.Tensor], tp: TensorParallel) -> dict[str, torch.Tensor]:
    """What a rank loads from per-rank files: its share, with `wo_a` dense in BF16 (convert.py drops its scale)."""
    share = shard_state_dict(full, tp)
    for name in [n for n in share if n.endswith(".attn.wo_a.weight")]:
        scale = share.pop(name[: -len("weight")] + "scale")
        share[name] = dequantize_fp8_blocks(share[name], scale).to(torch.bfloat16)
    return share


def test_rank_files_hold_what_convert_py_writes(split_dirs: dict, tp_official_dir: Path) -> None:
    path = split_dirs[2]
    assert {p.name for p in path.glob("*.safetensors")} == {"model0-mp2.safetensors", "model1-mp2.safetensors"}
    assert (path / "config.json").is_file() and (path / "inference" / "config.json").is_file()
    entries = SafetensorsFile(path / "model1-mp2.safetensors").entries
    source = {}
    for shard in tp_official_dir.glob("*.safetensors"):
        source.update(SafetensorsFile(shard).entries)
    experts = {int(k.split(".")[4]) for k in entries if ".ffn.experts." in k}
    assert experts == {4, 5, 6, 7}, "rank 1 keeps its experts under their global index"
    w1 = entries["layers.2.ffn.experts.5.w1.weight"]
    assert (w1.dtype, w1.shape) == ("F4", (TP_SMALL.moe_inter_dim, TP_SMALL.dim))  # FP4 values, not bytes
    assert entries["layers.2.ffn.experts.5.w1.scale"].dtype == "F8_E8M0"
    assert entries["layers.0.attn.wo_a.weight"].dtype == "BF16" and "layers.0.attn.wo_a.scale" not in entries
    assert entries["layers.0.attn.wq_b.weight"].shape[0] * 2 == source["layers.0.attn.wq_b.weight"].shape[0]
    assert entries["head.weight"].shape[0] * 2 == TP_SMALL.vocab_size
    shared = "layers.1.ffn.shared_experts.w2.weight"
    assert entries[shared].shape == source[shared].shape, "convert.py leaves the shared expert whole"
    safetensors = pytest.importorskip("safetensors")
    with safetensors.safe_open(path / "model1-mp2.safetensors", "pt") as f:  # the library convert.py writes with
        packed = f.get_tensor("layers.2.ffn.experts.5.w1.weight")
    assert packed.dtype == torch.float4_e2m1fn_x2 and packed.shape == (TP_SMALL.moe_inter_dim, TP_SMALL.dim // 2)


@pytest.mark.parametrize("tp", TP_RANKS, ids=str)
def test_rank_maps_only_its_file_and_gets_its_share(tp: TensorParallel, split_dirs: dict, tp_full_state: dict,
                                                    tp_official_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened, hashed = [], []
    original_init, original_hash = SafetensorsFile.__init__, fingerprint_module._file_sha256
    monkeypatch.setattr(SafetensorsFile, "__init__", lambda self, p: opened.append(Path(p).name) or
                        original_init(self, p))
    monkeypatch.setattr(fingerprint_module, "_file_sha256", lambda p: hashed.append(p.name) or original_hash(p))
    model, info = load_checkpoint(split_dirs[tp.size], tp=tp)
    mine = f"model{tp.rank}-mp{tp.size}.safetensors"
    assert opened == [mine] and set(hashed) <= {mine} and info.shards == (mine,) and info.split_size == tp.size
    assert_same_tensors(parameters(model), _expected_share(tp_full_state, tp))
    assert model.layers[0].attn.wo_a.scale is None
    monkeypatch.undo()
    assert info.fingerprint == model_fingerprint(tp_official_dir) == model_fingerprint(split_dirs[tp.size])


def test_one_way_split_computes_what_the_whole_checkpoint_computes(tp_official_dir: Path, tmp_path: Path) -> None:
    whole, _ = load_checkpoint(tp_official_dir, numerics=REFERENCE, fingerprint=False)
    split, info = load_checkpoint(split_checkpoint(tp_official_dir, tmp_path / "mp1", 1), numerics=REFERENCE)
    ids = torch.randint(0, TP_SMALL.vocab_size, (20,), generator=torch.Generator().manual_seed(1))
    assert info.split_size == 1 and torch.equal(logits(split, ids)[0], logits(whole, ids)[0])


def test_wrong_number_of_ranks_is_refused(split_dirs: dict) -> None:
    for tp in (TensorParallel(0, 4), SINGLE):
        with pytest.raises(CheckpointError, match=rf"split for 2 tensor-parallel ranks.*not {tp.size};"):
            load_checkpoint(split_dirs[2], fingerprint=False, tp=tp)


def test_incomplete_split_is_refused(split_dirs: dict, tmp_path: Path) -> None:
    path = copy_checkpoint(split_dirs[4], tmp_path / "mp4")
    (path / "model2-mp4.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"missing \['model2-mp4.safetensors'\]"):
        load_checkpoint(path, fingerprint=False, tp=TensorParallel(0, 4))


def test_rank_file_holding_another_ranks_expert_is_refused(split_dirs: dict, tmp_path: Path) -> None:
    path = copy_checkpoint(split_dirs[2], tmp_path / "mp2")
    mine, theirs = SafetensorsFile(path / "model0-mp2.safetensors"), SafetensorsFile(path / "model1-mp2.safetensors")
    stray = "layers.3.ffn.experts.6.w2.weight"
    tensors = {key: mine.tensor(key).clone() for key in mine.entries} | {stray: theirs.tensor(stray).clone()}
    dtypes = {key: entry.dtype for key, entry in mine.entries.items()} | {stray: "F4"}
    write_safetensors(path / "model0-mp2.safetensors", tensors, dtypes)
    with pytest.raises(CheckpointError, match=rf"unexpected tensor.*rank 0's file of a 2-way split.*{stray}"):
        load_checkpoint(path, fingerprint=False, tp=TensorParallel(0, 2))


def test_changed_files_lose_the_source_fingerprint(split_dirs: dict, tmp_path: Path) -> None:
    path = copy_checkpoint(split_dirs[2], tmp_path / "mp2")
    rank_file = path / "model1-mp2.safetensors"
    data = bytearray(rank_file.read_bytes())
    data[-1] ^= 0x01
    rank_file.write_bytes(bytes(data))
    load_checkpoint(path, tp=TensorParallel(0, 2))  # rank 0 vouches for its own file only
    with pytest.raises(CheckpointError, match="model1-mp2.safetensors: content differs"):
        load_checkpoint(path, tp=TensorParallel(1, 2))
    config = path / "inference" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "rope_theta": 20000.0}))
    with pytest.raises(CheckpointError, match="config differs"):
        model_fingerprint(path)


def test_convert_py_output_without_a_manifest_loads_under_its_own_fingerprint(split_dirs: dict, tp_full_state: dict,
                                                                             tmp_path: Path) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    path = tmp_path / "converted"
    shutil.copytree(split_dirs[2], path, ignore=shutil.ignore_patterns(MANIFEST_FILE, ".fingerprint.json"))
    for rank_file in path.glob("*.safetensors"):  # rewritten by the library convert.py saves with
        tensors = safetensors_torch.load_file(rank_file)
        safetensors_torch.save_file(tensors, rank_file)
    fingerprints = set()
    for tp in (TensorParallel(0, 2), TensorParallel(1, 2)):
        model, info = load_checkpoint(path, tp=tp)
        assert_same_tensors(parameters(model), _expected_share(tp_full_state, tp))
        fingerprints.add(info.fingerprint)
    assert fingerprints == {model_fingerprint(path)} and model_fingerprint(split_dirs[2]) not in fingerprints


def test_split_refuses_what_it_cannot_split(tp_official_dir: Path, split_dirs: dict, dequantized_hf_dir: Path,
                                            tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="already split 2 ways"):
        split_checkpoint(split_dirs[2], tmp_path / "a", 4)
    with pytest.raises(CheckpointError, match="hf layout"):
        split_checkpoint(dequantized_hf_dir, tmp_path / "b", 2)
    with pytest.raises(CheckpointError, match="empty directory"):
        split_checkpoint(tp_official_dir, split_dirs[2], 2)
    with pytest.raises(CheckpointError, match="over 8 ranks.*n_heads"):
        split_checkpoint(tp_official_dir, tmp_path / "c", 8)
    assert not (tmp_path / "c").exists(), "nothing is written before every rank's split is known to work"


def test_checkpoint_split_command(tp_official_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    assert main(["checkpoint-split", str(tp_official_dir), str(out), "--tensor-parallel", "2"]) == 0
    assert model_fingerprint(tp_official_dir) in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model0-mp2.safetensors", "model1-mp2.safetensors"]
    assert main(["checkpoint-split", str(tp_official_dir), str(out), "--tensor-parallel", "2"]) == 2
    assert "empty directory" in capsys.readouterr().err


def test_fingerprint_cache_lets_ranks_skip_hashing_until_a_file_changes(split_dirs: dict, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = copy_checkpoint(split_dirs[2], tmp_path / "mp2")  # the copy has no cache: hashes once, then reuses
    source = model_fingerprint(split_dirs[2])
    assert load_checkpoint(path, tp=TensorParallel(1, 2))[1].fingerprint == source
    hashed = []
    original = fingerprint_module._file_sha256
    monkeypatch.setattr(fingerprint_module, "_file_sha256", lambda p: hashed.append(p.name) or original(p))
    load_checkpoint(path, tp=TensorParallel(1, 2))
    assert hashed == []
    stat = (path / "model1-mp2.safetensors").stat()
    os.utime(path / "model1-mp2.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert load_checkpoint(path, tp=TensorParallel(1, 2))[1].fingerprint == source
    assert hashed == ["model1-mp2.safetensors"]
