"""Meta's `consolidated.NN.pth` shards read lazily, and merged into our tensors block by block.

`torch.load(mmap=True, weights_only=True)` gives every tensor's name, shape and dtype without reading data.
Where the byte offset of each tensor inside the file can be established (the zip format of torch.save), data
is copied file-to-file by the kernel (`os.copy_file_range`, like `cp`) or read into two reusable buffers, so
memory stays at a few tens of MB whatever the model size. Otherwise the memory-mapped tensors are used and
their pages handed back after each block.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .safetensors_stream import FileSlice

CHUNK_BYTES = 16 << 20  # the most bytes of one tensor held at once (twice: read buffer and output buffer)
MADV_DONTNEED = 4
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass
class Shard:
    """One opened shard: its (memory-mapped) tensors and, when known, each tensor's byte offset in the file."""

    path: Path
    tensors: dict[str, torch.Tensor]
    mapped: bool
    offsets: dict[str, int] | None = None
    fd: int | None = None

    def close(self) -> None:
        """Close the file descriptor used for direct reads."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def open_shard(path: Path) -> Shard:
    """Memory-map one shard (weights only); falls back to a full load for the old non-zip format."""
    mapped = True
    try:
        try:
            tensors = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            mapped, tensors = False, torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError... for broken files
        raise ValueError(
            f"{path} is truncated or not a PyTorch checkpoint ({type(error).__name__}: {str(error)[:200]}). "
            "Re-download or re-copy this shard."
        ) from None
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise ValueError(f"{path} does not hold a dict of tensors, so it is not a Meta checkpoint shard.")
    shard = Shard(path, tensors, mapped)
    shard.offsets = file_offsets(path, tensors) if mapped else None
    if shard.offsets is not None:
        shard.fd = os.open(path, os.O_RDONLY)
    return shard


def file_offsets(path: Path, tensors: dict[str, torch.Tensor]) -> dict[str, int] | None:
    """Byte offset of each tensor's data in the file, or None if it cannot be established with certainty.

    torch.load(mmap=True) maps the whole file once, so every storage sits at (mapping base + its record
    offset in the zip). Sorting storages by address and `data/N` records by offset must give one constant
    difference, the base; any mismatch (shared or odd storages) means we fall back to the mapping.
    """
    try:
        reader = torch._C.PyTorchFileReader(str(path))
        records = sorted(
            reader.get_record_offset(name) for name in reader.get_all_records() if name.startswith("data/")
        )
    except Exception:  # a private API: if it changes, the mapped tensors still work
        return None
    storages = sorted({t.untyped_storage().data_ptr() for t in tensors.values()})
    if len(storages) != len(records) or not all(t.is_contiguous() for t in tensors.values()):
        return None
    bases = {address - offset for address, offset in zip(storages, records, strict=True)}
    if len(bases) != 1:
        return None
    base = bases.pop()
    return {key: t.data_ptr() - base for key, t in tensors.items()}


def release_pages(tensor: torch.Tensor) -> None:
    """Drop the resident pages under a memory-mapped, never-written tensor (the kernel re-reads them if needed).

    Without this, every page read through the mapping stays in this process's resident set, and peak memory
    would reach the checkpoint size even though each tensor is used once.
    """
    if _LIBC is None or not tensor.is_contiguous():
        return
    start = tensor.data_ptr() // _PAGE * _PAGE
    end = tensor.data_ptr() + tensor.numel() * tensor.element_size()
    _LIBC.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_DONTNEED)


class BlockReader:
    """Rows of shard tensors read into reusable buffers (or sliced from the mapping when offsets are unknown)."""

    def __init__(self):
        self.read_buffer = torch.empty(CHUNK_BYTES, dtype=torch.uint8)
        self.out_buffer = torch.empty(CHUNK_BYTES, dtype=torch.uint8)

    def rows(self, shard: Shard, key: str, start: int, count: int, slot: int = 0, slots: int = 1) -> torch.Tensor:
        """Rows [start, start + count) of `key` in `shard`; `slot` of `slots` parts of the read buffer."""
        tensor = shard.tensors[key]
        if shard.offsets is None:
            return tensor[start : start + count]
        row_bytes = tensor[0].numel() * tensor.element_size() if tensor.dim() > 1 else tensor.element_size()
        size, part = count * row_bytes, CHUNK_BYTES // slots
        if size > part:
            raise ValueError(f"block of {size} bytes exceeds its buffer of {part}")
        view = self.read_buffer[slot * part : slot * part + size]
        done = 0
        while done < size:
            got = os.preadv(shard.fd, [view[done:].numpy()], shard.offsets[key] + start * row_bytes + done)
            if got <= 0:
                raise ValueError(f"{shard.path} ended early while reading {key}: the file is truncated.")
            done += got
        return view.view(tensor.dtype).view(count, *tensor.shape[1:])

    def output(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A view of the output buffer with this shape."""
        count = 1
        for size in shape:
            count *= size
        return self.out_buffer[: count * dtype.itemsize].view(dtype).view(shape)


def rows_per_block(shards: list[Shard], key: str, parts: int = 1, multiple: int = 1) -> int:
    """How many rows of `key` (a multiple of `multiple`) fit in one of `parts` parts of a buffer."""
    tensor = shards[0].tensors[key]
    row_bytes = tensor[0].numel() * tensor.element_size() if tensor.dim() > 1 else tensor.element_size()
    rows = max(1, CHUNK_BYTES // parts // row_bytes) // multiple * multiple
    if rows == 0:
        raise ValueError(f"{key}: one group of {multiple} rows does not fit in {CHUNK_BYTES} bytes; raise CHUNK_BYTES.")
    return rows


def merged_blocks(
    shards: list[Shard],
    key: str,
    axis: int | None,
    dtype: torch.dtype,
    rotary_heads: int | None,
    reader: BlockReader,
) -> Iterator[torch.Tensor | FileSlice]:
    """Our tensor for Meta's `key`, merged across shards along `axis`, as consecutive blocks of rows.

    Merging along dim 0 is byte concatenation, so unchanged pieces are copied straight from the files. Along
    dim 1 each block of rows is concatenated across ranks. `rotary_heads` (wq/wk) reorders rows per head;
    every rank holds whole heads, so this is done rank by rank, whole heads per block.
    """
    source = shards[0].tensors[key]
    pieces = shards[:1] if axis is None else shards
    if axis in (None, 0) or len(shards) == 1:
        direct = rotary_heads is None and dtype == source.dtype
        head_dim = source.shape[0] * len(pieces) // rotary_heads if rotary_heads else 1
        rows = rows_per_block(shards, key, multiple=head_dim)
        for shard in pieces:
            if direct and shard.offsets is not None:
                yield FileSlice(shard.fd, shard.offsets[key], source.numel() * source.element_size())
                continue
            for start in range(0, len(source), rows):
                block = reader.rows(shard, key, start, min(rows, len(source) - start))
                if rotary_heads:
                    heads = len(block) // head_dim
                    out = reader.output(tuple(block.shape), block.dtype)
                    out.view(heads, 2, head_dim // 2, -1).copy_(block.view(heads, head_dim // 2, 2, -1).transpose(1, 2))
                    block = out
                yield block.to(dtype)
                if shard.offsets is None and shard.mapped:
                    release_pages(shard.tensors[key][start : start + rows])
        return
    rows = rows_per_block(shards, key, parts=len(shards))
    width = sum(s.tensors[key].shape[1] for s in shards)
    for start in range(0, len(source), rows):
        count = min(rows, len(source) - start)
        blocks = [reader.rows(s, key, start, count, slot, len(shards)) for slot, s in enumerate(shards)]
        out = torch.cat(blocks, dim=1, out=reader.output((count, width), source.dtype))
        yield out.to(dtype)
        for shard in shards:
            if shard.offsets is None and shard.mapped:
                release_pages(shard.tensors[key][start : start + count])
