"""Byte-level safetensors reading and writing, without numpy or torch.

The PRM head remapping only moves a few small tensors between files. Working on raw bytes keeps
it dtype-agnostic (bf16 has no numpy dtype) and keeps this package importable without torch.
Format: 8-byte little-endian header length, a JSON header
`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`, then the data.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from build_engines.errors import ModelFolderError

ITEMSIZE: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
    "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}
INDEX_FILE = "model.safetensors.index.json"
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """Where one tensor lives: file, dtype, shape and byte range inside the data section."""

    file: Path
    dtype: str
    shape: tuple[int, ...]
    begin: int  # byte offset in the data section
    end: int
    data_start: int  # absolute offset of the data section in the file

    @property
    def numel(self) -> int:
        n = 1
        for dim in self.shape:
            n *= dim
        return n


@dataclass(frozen=True, slots=True)
class RawTensor:
    """A tensor as bytes, ready to be written."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes

    def __post_init__(self) -> None:
        if self.dtype not in ITEMSIZE:
            raise ValueError(f"unsupported safetensors dtype {self.dtype}")
        numel = 1
        for dim in self.shape:
            numel *= dim
        if len(self.data) != numel * ITEMSIZE[self.dtype]:
            raise ValueError(f"{len(self.data)} bytes do not hold {self.dtype}{list(self.shape)}")


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Tensor name -> TensorInfo for one .safetensors file."""
    with path.open("rb") as f:
        raw_len = f.read(8)
        if len(raw_len) != 8:
            raise ModelFolderError(f"{path}: not a safetensors file (too short)")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > _MAX_HEADER:
            raise ModelFolderError(f"{path}: implausible safetensors header length {header_len}")
        header = json.loads(f.read(header_len))
    data_start = 8 + header_len
    out: dict[str, TensorInfo] = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        begin, end = meta["data_offsets"]
        out[name] = TensorInfo(path, meta["dtype"], tuple(meta["shape"]), begin, end, data_start)
    return out


def read_tensor(info: TensorInfo) -> RawTensor:
    with info.file.open("rb") as f:
        f.seek(info.data_start + info.begin)
        data = f.read(info.end - info.begin)
    return RawTensor(info.dtype, info.shape, data)


def write_file(path: Path, tensors: dict[str, RawTensor], metadata: dict[str, str] | None = None) -> None:
    """Write tensors (in name order) as one safetensors file."""
    header: dict[str, object] = {}
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        header[name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(t.data)]}
        offset += len(t.data)
    if metadata:
        header["__metadata__"] = metadata
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format recommends 8-byte alignment of the data section
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name in sorted(tensors):
            f.write(tensors[name].data)


def weight_files(model_dir: Path) -> list[Path]:
    """The .safetensors files of a HF model folder, via its index when there is one."""
    index = model_dir / INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return sorted({model_dir / f for f in weight_map.values()})
    return sorted(model_dir.glob("*.safetensors"))


def tensor_map(model_dir: Path) -> dict[str, TensorInfo]:
    """Tensor name -> TensorInfo over all weight files of a folder (headers only, no data read)."""
    files = weight_files(model_dir)
    if not files:
        raise ModelFolderError(f"{model_dir}: no .safetensors weights found")
    out: dict[str, TensorInfo] = {}
    for file in files:
        out.update(read_header(file))
    return out


def decode_floats(t: RawTensor) -> list[float]:
    """Decode a small float tensor to Python floats (bias values for the manifest)."""
    if t.dtype == "F32":
        return list(struct.unpack(f"<{len(t.data) // 4}f", t.data))
    if t.dtype == "F16":
        return list(struct.unpack(f"<{len(t.data) // 2}e", t.data))
    if t.dtype == "BF16":
        # bf16 is the upper half of an IEEE float32
        return [struct.unpack("<f", b"\x00\x00" + t.data[i:i + 2])[0] for i in range(0, len(t.data), 2)]
    if t.dtype == "F64":
        return list(struct.unpack(f"<{len(t.data) // 8}d", t.data))
    raise ValueError(f"cannot decode {t.dtype} as floats")


def zeros_like_rows(t: RawTensor, rows: int) -> RawTensor:
    """A [rows, *t.shape[1:]] zero tensor of t's dtype (all-zero bytes are 0.0 in every float dtype)."""
    row_bytes = ITEMSIZE[t.dtype] * (t.shape[1] if len(t.shape) > 1 else 1)
    return RawTensor(t.dtype, (rows, *t.shape[1:]), bytes(rows * row_bytes))


def stack_rows(parts: list[RawTensor]) -> RawTensor:
    """Concatenate 2-D tensors of one dtype along dim 0."""
    dtype, width = parts[0].dtype, parts[0].shape[1:]
    if any(p.dtype != dtype or p.shape[1:] != width for p in parts):
        raise ValueError("stack_rows needs equal dtypes and trailing shapes")
    rows = sum(p.shape[0] for p in parts)
    return RawTensor(dtype, (rows, *width), b"".join(p.data for p in parts))
