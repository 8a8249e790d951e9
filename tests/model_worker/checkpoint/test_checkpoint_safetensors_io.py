"""The safetensors reader/writer: exact round trips for every dtype, interoperability with the `safetensors`
package both ways, zero-copy views, and clear errors for corrupt files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from model_worker.checkpoint import CheckpointError
from model_worker.checkpoint.safetensors_io import DTYPES, SafetensorsFile, write_safetensors

_STORABLE = [name for name in DTYPES if name != "F8_E8M0"]


def _random_tensor(dtype: torch.dtype, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    raw = torch.randint(0, 256, (int(torch.Size(shape).numel()) * dtype.itemsize,), dtype=torch.uint8,
                        generator=torch.Generator().manual_seed(seed))
    if dtype == torch.bool:
        return (raw % 2).bool().view(shape)
    return raw.view(dtype).view(shape)


def _bytes(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(-1).view(torch.uint8)


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(specs=st.lists(st.tuples(st.sampled_from(_STORABLE), st.lists(st.integers(0, 5), max_size=3)),
                      min_size=1, max_size=6), seed=st.integers(0, 1000))
def test_round_trip_every_dtype(tmp_path_factory: pytest.TempPathFactory, specs: list, seed: int) -> None:
    tensors = {f"t{i}": _random_tensor(DTYPES[d], tuple(shape), seed + i) for i, (d, shape) in enumerate(specs)}
    path = tmp_path_factory.mktemp("st") / "x.safetensors"
    size = write_safetensors(path, tensors)
    assert size == path.stat().st_size
    file = SafetensorsFile(path)
    for name, tensor in tensors.items():
        got = file.tensor(name)
        assert got.dtype == tensor.dtype and got.shape == tensor.shape
        assert torch.equal(_bytes(got), _bytes(tensor))
    with safe_open(str(path), "pt") as theirs:
        assert set(theirs.keys()) == set(tensors)


def test_raw_byte_dtypes_interoperate_with_safetensors(tmp_path: Path) -> None:
    scale = torch.tensor([[127, 130], [1, 254]], dtype=torch.uint8)
    packed = torch.tensor([[0x21, 0xF8]], dtype=torch.uint8)
    write_safetensors(tmp_path / "ours.safetensors", {"w.scale": scale, "w.weight": packed},
                      {"w.scale": "F8_E8M0", "w.weight": "I8"})
    header = SafetensorsFile(tmp_path / "ours.safetensors").entries
    assert header["w.scale"].dtype == "F8_E8M0" and header["w.weight"].dtype == "I8"
    with safe_open(str(tmp_path / "ours.safetensors"), "pt") as theirs:
        assert torch.equal(theirs.get_tensor("w.weight").view(torch.uint8), packed)
        if hasattr(torch, "float8_e8m0fnu"):
            assert torch.equal(theirs.get_tensor("w.scale").view(torch.uint8), scale)
    fp8 = torch.randn(4, 8).to(torch.float8_e4m3fn)
    bf16 = torch.randn(3, 5).to(torch.bfloat16)
    save_file({"a": fp8, "b": bf16}, str(tmp_path / "theirs.safetensors"))
    file = SafetensorsFile(tmp_path / "theirs.safetensors")
    assert torch.equal(file.tensor("a").view(torch.uint8), fp8.view(torch.uint8))
    assert torch.equal(file.tensor("b"), bf16)


def test_tensors_are_views_of_the_map(tmp_path: Path) -> None:
    write_safetensors(tmp_path / "x.safetensors", {"a": torch.arange(6.0), "b": torch.ones(2, 2, dtype=torch.int64)})
    file = SafetensorsFile(tmp_path / "x.safetensors")
    for name in ("a", "b"):
        tensor = file.tensor(name)
        assert tensor.untyped_storage().data_ptr() == file.base.untyped_storage().data_ptr()
    tensor = file.tensor("a")
    tensor.add_(1)  # copy-on-write: the file is untouched
    assert torch.equal(SafetensorsFile(tmp_path / "x.safetensors").tensor("a"), torch.arange(6.0))


def _raw_file(path: Path, header: dict, data: bytes) -> None:
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


def test_misaligned_tensor_is_copied(tmp_path: Path) -> None:
    values = torch.tensor([1.5, -2.0], dtype=torch.float32)
    header = {"u": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
              "f": {"dtype": "F32", "shape": [2], "data_offsets": [3, 11]}}
    _raw_file(tmp_path / "x.safetensors", header, b"\x01\x02\x03" + values.numpy().tobytes())
    file = SafetensorsFile(tmp_path / "x.safetensors")
    assert torch.equal(file.tensor("f"), values) and file.tensor("u").tolist() == [1, 2, 3]


@pytest.mark.parametrize("header,data,message", [
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, "truncated"),
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}, b"\0" * 12, "expected 16 bytes"),
    ({"a": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 2]}}, b"\0" * 2, "unsupported dtype"),
    ({"a": {"shape": [4]}}, b"", "malformed"),
])
def test_corrupt_files(tmp_path: Path, header: dict, data: bytes, message: str) -> None:
    _raw_file(tmp_path / "x.safetensors", header, data)
    with pytest.raises(CheckpointError, match=message):
        SafetensorsFile(tmp_path / "x.safetensors")


def test_garbage_header(tmp_path: Path) -> None:
    (tmp_path / "x.safetensors").write_bytes(struct.pack("<Q", 5) + b"{oops")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        SafetensorsFile(tmp_path / "x.safetensors")
    (tmp_path / "y.safetensors").write_bytes(struct.pack("<Q", 1 << 40))
    with pytest.raises(CheckpointError, match="not plausible"):
        SafetensorsFile(tmp_path / "y.safetensors")
