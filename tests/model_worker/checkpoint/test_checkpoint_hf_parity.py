"""Parity with transformers: a `DeepseekV4ForCausalLM` with random weights, saved with `save_pretrained`, loaded by
our loader (reference numerics), must give the same logits at every position, whether our model runs the sequence
in one pass, in chunks with commits between them, or token by token. Also: transformers loads what we write."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from checkpoint_testlib import one_thread, rel_err
from small_config import SMALL

from model_worker.checkpoint import load_checkpoint, write_state_dict
from model_worker.checkpoint.layouts import HF_NATIVE, layout_config
from model_worker.checkpoint.names import to_hf_name
from model_worker.checkpoint.random_init import random_state_dict
from model_worker.checkpoint.safetensors_io import SafetensorsFile
from model_worker.config import to_hf_dict
from model_worker.model import DeepseekV4, ForwardBatch
from model_worker.numerics import REFERENCE

transformers = pytest.importorskip("transformers")
NUM_TOKENS = 60
CHUNKS = (7, 1, 20, 1, 5, 1, 13, 1, 11)


@pytest.fixture(scope="module")
def dense_state() -> dict[str, torch.Tensor]:
    with one_thread():
        return random_state_dict(DeepseekV4(layout_config(SMALL, "hf"), quantized=False), seed=11,
                                 float_dtype=torch.float32)


@pytest.fixture(scope="module")
def hf_model(dense_state: dict) -> transformers.DeepseekV4ForCausalLM:
    kwargs = {k: v for k, v in to_hf_dict(SMALL).items() if k not in ("architectures", "model_type")}
    with one_thread():
        model = transformers.DeepseekV4ForCausalLM(transformers.DeepseekV4Config(**kwargs)).float().eval()
    model.load_state_dict({to_hf_name(k): v for k, v in dense_state.items()}, strict=True)
    return model


@pytest.fixture(scope="module")
def saved_dir(hf_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("save_pretrained")
    hf_model.save_pretrained(out, max_shard_size="2MB")
    return out


@pytest.fixture(scope="module")
def token_ids() -> torch.Tensor:
    return torch.randint(0, SMALL.vocab_size, (NUM_TOKENS,), generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def reference_logits(hf_model, token_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), one_thread():
        return hf_model(token_ids[None]).logits[0].float()


@pytest.fixture(scope="module")
def ours(saved_dir: Path) -> DeepseekV4:
    model, info = load_checkpoint(saved_dir, numerics=REFERENCE, fingerprint=False)
    assert (info.layout, info.naming, info.config.n_mtp_layers) == ("hf", "hf-saved", 0)
    assert len(info.shards) > 1, "save_pretrained should have sharded this checkpoint"
    return model


def test_save_pretrained_full_pass_parity(ours: DeepseekV4, token_ids: torch.Tensor, reference_logits) -> None:
    out = ours(ForwardBatch.single(token_ids, ours.new_state(), logits="all")).logits
    err = rel_err(out, reference_logits)
    assert err.shape == (NUM_TOKENS,)
    assert err.max() <= 1e-4, err


def test_save_pretrained_chunked_parity(ours: DeepseekV4, token_ids: torch.Tensor, reference_logits) -> None:
    assert sum(CHUNKS) == NUM_TOKENS
    state, start, rows = ours.new_state(), 0, []
    for length in CHUNKS:
        rows.append(ours(ForwardBatch.single(token_ids[start : start + length], state, logits="all")).logits)
        state.commit()
        start += length
    assert rel_err(torch.cat(rows), reference_logits).max() <= 1e-4


def test_save_pretrained_token_by_token_parity(ours: DeepseekV4, token_ids: torch.Tensor, reference_logits) -> None:
    state, rows = ours.new_state(), []
    for position in range(NUM_TOKENS):
        rows.append(ours(ForwardBatch.single(token_ids[position : position + 1], state, logits="all")).logits)
        state.commit()
    assert rel_err(torch.cat(rows), reference_logits).max() <= 1e-4


def test_our_hf_writer_matches_save_pretrained(dense_state: dict, saved_dir: Path, tmp_path: Path) -> None:
    ours_dir = write_state_dict(dense_state, SMALL, tmp_path / "ours", "hf", num_shards=3)
    assert _schema(ours_dir) == _schema(saved_dir)


@pytest.mark.parametrize("naming", ["hf-saved", HF_NATIVE])
def test_transformers_loads_our_hf_checkpoint(naming: str, dense_state: dict, token_ids: torch.Tensor,
                                              reference_logits, tmp_path: Path) -> None:
    out_dir = write_state_dict(dense_state, SMALL, tmp_path / naming, "hf", float_dtype=torch.float32,
                               hf_naming=naming)
    with one_thread():
        model, loading = transformers.DeepseekV4ForCausalLM.from_pretrained(
            out_dir, dtype=torch.float32, output_loading_info=True)
    assert not loading["missing_keys"] and not loading["unexpected_keys"], loading
    with torch.no_grad():
        theirs = model.eval()(token_ids[None]).logits[0]
    assert torch.equal(theirs, reference_logits)
    ours, info = load_checkpoint(out_dir, numerics=REFERENCE, fingerprint=False)
    assert info.naming == naming
    out = ours(ForwardBatch.single(token_ids, ours.new_state(), logits="all")).logits
    assert rel_err(out, reference_logits).max() <= 1e-4


def _schema(directory: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    out = {}
    for path in directory.glob("*.safetensors"):
        out.update({k: (e.dtype, e.shape) for k, e in SafetensorsFile(path).entries.items()})
    return out
