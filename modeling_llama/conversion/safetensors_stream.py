"""Write sharded safetensors one tensor at a time, so memory holds one tensor, not one shard or one model.

The safetensors header lists every tensor's dtype, shape and byte range; all of that is known before any data
is read (from shapes alone), so the header goes first and each tensor's bytes are appended as it is produced.
The files are the standard format (`safetensors.safe_open` and `from_pretrained` read them).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

DTYPE_NAMES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B)?\s*$", re.IGNORECASE)
UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


@dataclass(frozen=True)
class FileSlice:
    """`nbytes` bytes at `offset` of the open file `fd`, copied into the output by the kernel (no user memory)."""

    fd: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class TensorPlan:
    """One tensor to write: its name, shape and dtype (known before its data is)."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        """Size of the tensor's data in bytes."""
        count = 1
        for size in self.shape:
            count *= size
        return count * self.dtype.itemsize


def parse_size(text: str | int) -> int:
    """'5GB' / '500MiB' / 1000 -> bytes."""
    if isinstance(text, int):
        return text
    match = SIZE.match(str(text))
    if not match:
        raise ValueError(f"Cannot read the size {text!r}; write it like 5GB, 500MB or 200KiB.")
    return int(float(match.group(1)) * UNITS[(match.group(2) or "B").upper()])


def plan_shards(tensors: Sequence[TensorPlan], max_shard_bytes: int) -> list[list[TensorPlan]]:
    """Group tensors, in order, into shards of at most `max_shard_bytes` (a larger tensor gets a shard alone)."""
    shards: list[list[TensorPlan]] = [[]]
    size = 0
    for tensor in tensors:
        if shards[-1] and size + tensor.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.nbytes
    return [shard for shard in shards if shard]


def shard_file_names(count: int) -> list[str]:
    """transformers' names: model.safetensors, or model-0000k-of-0000n.safetensors."""
    if count == 1:
        return ["model.safetensors"]
    return [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]


def write_safetensors(
    path: str | os.PathLike,
    plans: Sequence[TensorPlan],
    produce: Callable[[TensorPlan], torch.Tensor | Iterable[torch.Tensor | FileSlice]],
    metadata: dict[str, str] | None = None,
    written: Callable[[TensorPlan], None] | None = None,
) -> None:
    """Write `plans` to one safetensors file, calling `produce(plan)` for each tensor's data in turn.

    `produce` returns the tensor, or its consecutive blocks: tensors or `FileSlice`s whose bytes, concatenated,
    are the tensor.

    `written(plan)` runs after each tensor's bytes are out, e.g. to release the memory its sources used.
    """
    header: dict[str, dict] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for plan in plans:
        header[plan.name] = {
            "dtype": DTYPE_NAMES[plan.dtype],
            "shape": list(plan.shape),
            "data_offsets": [offset, offset + plan.nbytes],
        }
        offset += plan.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as the safetensors library writes it
    with open(path, "wb", buffering=0) as handle:  # unbuffered: file-to-file copies share its position
        _write_all(handle, len(encoded).to_bytes(8, "little") + encoded)
        for plan in plans:
            produced = produce(plan)
            size = 0
            for chunk in [produced] if isinstance(produced, torch.Tensor) else produced:
                if isinstance(chunk, FileSlice):
                    _copy_range(chunk, handle)
                    size += chunk.nbytes
                    continue
                if chunk.dtype != plan.dtype:
                    raise RuntimeError(f"{plan.name}: produced {chunk.dtype}, planned {plan.dtype}")
                data = chunk.detach().contiguous().reshape(-1).view(torch.uint8)
                _write_all(handle, memoryview(data.numpy()))
                size += data.numel()
                del chunk, data
            if size != plan.nbytes:
                raise RuntimeError(f"{plan.name}: produced {size} bytes, planned {plan.nbytes} for shape {plan.shape}")
            if written is not None:
                written(plan)


def _write_all(handle, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[handle.write(view) :]


def _copy_range(piece: FileSlice, handle) -> None:
    """Append `piece` to `handle` with copy_file_range (what `cp` uses); plain reads where it is unavailable."""
    offset, left = piece.offset, piece.nbytes
    while left:
        try:
            copied = os.copy_file_range(piece.fd, handle.fileno(), left, offset)
        except (AttributeError, OSError):  # other OS, other file systems (EXDEV), old kernels
            copied = handle.write(os.pread(piece.fd, min(left, 16 << 20), offset))
        if copied <= 0:
            raise OSError(f"could not copy {left} bytes at offset {offset}: the source file is shorter than expected")
        offset, left = offset + copied, left - copied


def write_index(folder: str | os.PathLike, shards: Sequence[Sequence[TensorPlan]], names: Sequence[str]) -> None:
    """model.safetensors.index.json (only for more than one shard), as transformers writes it."""
    if len(shards) < 2:
        return
    weight_map = {plan.name: name for shard, name in zip(shards, names, strict=True) for plan in shard}
    total = sum(plan.nbytes for shard in shards for plan in shard)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    with open(os.path.join(folder, "model.safetensors.index.json"), "w", encoding="utf-8") as handle:
        json.dump(index, handle, indent=2, sort_keys=True)
        handle.write("\n")
