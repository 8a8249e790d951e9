"""Safetensors read and write without pickle: headers are parsed and validated here, and tensors are zero-copy views
into a private (copy-on-write) memory map of the file, so loading never holds a second copy of the weights.

F8_E8M0 (ue8m0 scales) reads as raw uint8 exponent bytes, which every torch version can hold. F4 (e2m1 pairs, what
`safetensors` writes for torch.float4_e2m1fn_x2, as DeepSeek's convert.py does for routed experts) reads as the same
packed uint8 bytes; its header shape counts FP4 values, so the last dim is twice the stored one.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from model_worker.checkpoint.errors import CheckpointError

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "F8_E8M0": torch.uint8,
    "F4": torch.uint8,
}
PACKED_PAIRS = "F4"  # two values per byte along the last dim
_NAMES: dict[torch.dtype, str] = {dtype: name for name, dtype in DTYPES.items() if name not in ("F8_E8M0", "F4")}
if hasattr(torch, "float8_e8m0fnu"):
    _NAMES[torch.float8_e8m0fnu] = "F8_E8M0"
_HEADER_LIMIT = 100 * 1024 * 1024  # the format's own cap; a larger length means a corrupt or foreign file


def dtype_name(dtype: torch.dtype) -> str:
    """The safetensors dtype string of a torch dtype."""
    if dtype not in _NAMES:
        raise CheckpointError(f"dtype {dtype} cannot be stored in safetensors")
    return _NAMES[dtype]


@dataclass(frozen=True)
class TensorEntry:
    """One header entry; `begin`/`end` are absolute byte offsets in the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def storage_shape(self) -> tuple[int, ...]:
        """The shape of the stored elements (for F4, of the packed bytes)."""
        return _storage_shape(self.dtype, self.shape)


def _storage_shape(dtype: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    return (*shape[:-1], shape[-1] // 2) if dtype == PACKED_PAIRS else shape


class SafetensorsFile:
    """A parsed, validated safetensors file. The memory map is opened on first tensor access and lives as long as any
    tensor viewing it (torch.frombuffer holds a reference), so nothing here needs closing."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                prefix = f.read(8)
                if len(prefix) < 8:
                    raise CheckpointError(f"{self.path}: truncated safetensors file ({self.size} bytes, no header)")
                (length,) = struct.unpack("<Q", prefix)
                if length > _HEADER_LIMIT:
                    raise CheckpointError(f"{self.path}: header length {length} is not plausible (corrupt file?)")
                if 8 + length > self.size:
                    raise CheckpointError(f"{self.path}: truncated safetensors file: header says {length} bytes, "
                                          f"file has {self.size - 8} after the length prefix")
                self.header_bytes = f.read(length)
        except OSError as exc:
            raise CheckpointError(f"cannot read {self.path}: {exc}") from exc
        self.data_start = 8 + length
        self.metadata, self.entries = self._parse()
        self._base: torch.Tensor | None = None

    def _parse(self) -> tuple[dict[str, str], dict[str, TensorEntry]]:
        try:
            header = json.loads(self.header_bytes)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{self.path}: safetensors header is not valid JSON: {exc}") from exc
        if not isinstance(header, dict):
            raise CheckpointError(f"{self.path}: safetensors header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        entries: dict[str, TensorEntry] = {}
        data_end = 0
        for name, raw in header.items():
            entry = self._entry(name, raw)
            entries[name] = entry
            data_end = max(data_end, entry.end)
            if entry.end > self.size:
                raise CheckpointError(
                    f"{self.path}: truncated safetensors file: tensor {name!r} ends at byte {entry.end}, "
                    f"file has {self.size} bytes")
        return metadata, entries

    def _entry(self, name: str, raw: object) -> TensorEntry:
        try:
            dtype, shape, (begin, end) = raw["dtype"], tuple(int(d) for d in raw["shape"]), raw["data_offsets"]
        except (TypeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"{self.path}: malformed header entry for {name!r}: {raw!r}") from exc
        if dtype not in DTYPES:
            raise CheckpointError(f"{self.path}: tensor {name!r} has unsupported dtype {dtype!r}")
        if dtype == PACKED_PAIRS and (not shape or shape[-1] % 2):
            raise CheckpointError(f"{self.path}: F4 tensor {name!r} {list(shape)} must have an even last dim")
        numel = 1
        for dim in _storage_shape(dtype, shape):
            numel *= dim
        expected = numel * DTYPES[dtype].itemsize
        if not 0 <= begin <= end or end - begin != expected or any(d < 0 for d in shape):
            raise CheckpointError(f"{self.path}: tensor {name!r} ({dtype} {list(shape)}) has data_offsets "
                                  f"[{begin}, {end}], expected {expected} bytes")
        return TensorEntry(name, dtype, shape, self.data_start + begin, self.data_start + end)

    @property
    def base(self) -> torch.Tensor:
        """The whole file as uint8, memory-mapped copy-on-write (pages stay file-backed until written)."""
        if self._base is None:
            with open(self.path, "rb") as f:
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
            self._base = torch.frombuffer(mapped, dtype=torch.uint8)
        return self._base

    def tensor(self, name: str) -> torch.Tensor:
        """A view of tensor `name` in the map (a copy only when its offset is misaligned for its dtype)."""
        entry = self.entries[name]
        dtype = DTYPES[entry.dtype]
        if entry.nbytes == 0:
            return torch.empty(entry.storage_shape, dtype=dtype)
        raw = self.base[entry.begin : entry.end]
        if entry.begin % dtype.itemsize:
            raw = raw.clone()
        return raw.view(dtype).view(entry.storage_shape)


def write_safetensors(path: str | Path, tensors: Mapping[str, torch.Tensor], dtypes: Mapping[str, str] | None = None,
                      metadata: Mapping[str, str] | None = None) -> int:
    """Write `tensors` to `path`; `dtypes` overrides the header dtype of raw-byte tensors (uint8 stored as "I8",
    "F8_E8M0" or packed "F4"). Returns the file size. Tensors are laid out widest dtype first so every offset stays
    aligned."""
    dtypes = dtypes or {}
    order = sorted(tensors, key=lambda n: -tensors[n].element_size())
    header: dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for name in order:
        tensor = tensors[name]
        dtype = dtypes.get(name) or dtype_name(tensor.dtype)
        if DTYPES[dtype].itemsize != tensor.element_size():
            raise CheckpointError(f"cannot store {name!r} ({tensor.dtype}) as {dtype}")
        nbytes = tensor.numel() * tensor.element_size()
        shape = list(tensor.shape)
        if dtype == PACKED_PAIRS:
            shape[-1] *= 2
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = Path(f"{path}.tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name in order:
            tensor = tensors[name].detach().contiguous().cpu().reshape(-1)
            if tensor.numel():
                f.write(tensor.view(torch.uint8).numpy().data)
    os.replace(tmp, path)
    return 8 + len(blob) + offset
