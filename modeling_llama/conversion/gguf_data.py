"""A GGUF file's tensor data, written in pieces at known offsets, read/cast in one thread while another writes.

Every tensor's place in the output is known from the header (shapes and types), so the data section is cut into
independent pieces, each a run of whole rows (whole heads for q/k, which are permuted within heads):
- `CopyPiece`: bytes that stay as they are (the GGUF type is the source dtype and no permutation applies) are
  copied by the kernel with `copy_file_range`, as `cp` does; they never enter user space.
- `EncodePiece`: rows read with `pread` into a reused buffer, permuted and cast (or quantized) by torch / gguf-py
  into another reused buffer, then written with `pwrite`.
With `workers` > 1, producer threads read and cast the next pieces while the calling thread writes the current one
(torch's copies, gguf-py's numpy quantizers and the system calls release the GIL). One thread writes: ext4 takes the
file's lock for every buffered write, and two writers spin on it. At most `depth` pieces (32 MB) are in flight, so
memory holds neither a tensor nor a shard; buffers are reused because fresh ones cost page faults on every piece.
A window of 4 pieces lost to the sequential loop on a loaded machine (the writer waited on each scheduling delay of
the producer); 32 won (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

# Small enough that a piece's source and output stay in the CPU caches between the read, the cast and the write.
CHUNK_BYTES = 1 << 20
DEPTH = 32  # pieces read/cast ahead of the writer: enough to ride out a busy machine's scheduling delays
FLOAT_TYPES = {0: torch.float32, 1: torch.float16, 30: torch.bfloat16}  # GGMLQuantizationType F32, F16, BF16


@dataclass(frozen=True)
class CopyPiece:
    """`nbytes` of source file `file` at `src_offset`, copied unchanged to `out_offset` of the output."""

    file: str
    src_offset: int
    nbytes: int
    out_offset: int


@dataclass(frozen=True)
class EncodePiece:
    """Rows of one source tensor, read, permuted (`heads` > 0: q/k heads in these rows) and encoded as `ggml_type`."""

    file: str
    src_offset: int
    rows: int
    cols: int
    dtype: torch.dtype
    heads: int
    ggml_type: int
    out_offset: int


def row_chunks(rows: int, row_bytes: int, unit: int, chunk_bytes: int) -> list[tuple[int, int]]:
    """(first row, row count) runs of whole `unit`s of rows, each about `chunk_bytes` (at least one unit)."""
    per = max(1, chunk_bytes // max(1, row_bytes * unit)) * unit
    return [(start, min(per, rows - start)) for start in range(0, rows, per)]


def tensor_pieces(file: str, src_offset: int, shape: Sequence[int], dtype: torch.dtype, ggml_type: int,
                  heads: int, out_offset: int, out_nbytes: int, chunk_bytes: int = CHUNK_BYTES) -> list:
    """The pieces of one tensor (of `shape`, `dtype` at `src_offset`) whose output starts at `out_offset`."""
    rows = shape[0] if len(shape) > 1 else 1
    cols = int(torch.Size(shape).numel()) // rows
    if heads == 0 and FLOAT_TYPES.get(int(ggml_type)) == dtype:  # same bytes: the kernel copies them
        return [CopyPiece(file, src_offset, out_nbytes, out_offset)]
    unit = rows // heads if heads else 1
    out_row = out_nbytes // rows
    row_bytes = cols * dtype.itemsize
    return [
        EncodePiece(file, src_offset + start * row_bytes, count, cols, dtype, count // unit if heads else 0,
                    int(ggml_type), out_offset + start * out_row)
        for start, count in row_chunks(rows, row_bytes, unit, chunk_bytes)
    ]


@dataclass(frozen=True)
class Encoded:
    """A piece's bytes, ready to be written at `out_offset`; `buffer` goes back to the pool once written."""

    data: memoryview
    out_offset: int
    buffer: bytearray | None


class DataWriter:
    """Produces and writes pieces for one output file descriptor; the source files are opened once and shared."""

    def __init__(self, out_fd: int):
        self.out_fd = out_fd
        self.sources: dict[str, int] = {}
        self.lock = threading.Lock()
        self.local = threading.local()  # per producer thread: read and float32 buffers
        self.free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()  # output buffers not in flight

    def source(self, file: str) -> int:
        """A read-only descriptor of `file` (pread is safe from several threads)."""
        with self.lock:
            if file not in self.sources:
                self.sources[file] = os.open(file, os.O_RDONLY)
            return self.sources[file]

    def scratch(self, name: str, nbytes: int) -> memoryview:
        """This thread's reusable buffer `name` of `nbytes`."""
        held = getattr(self.local, name, None)
        if held is None or len(held) < nbytes:
            held = bytearray(nbytes)
            setattr(self.local, name, held)
        return memoryview(held)[:nbytes]

    def produce(self, piece) -> Encoded | CopyPiece:
        """A piece's bytes (or the copy itself, which the writer performs)."""
        if isinstance(piece, CopyPiece):
            return piece
        rows = self.read(piece)
        target = FLOAT_TYPES.get(piece.ggml_type)
        if target is None:  # Q8_0 / Q4_0: gguf-py's numpy quantizers, row blocks independent of the chunking
            return Encoded(quantize(rows, piece), piece.out_offset, None)
        try:
            buffer = self.free.get_nowait()
        except queue.Empty:
            buffer = bytearray(0)
        nbytes = rows.numel() * target.itemsize
        if len(buffer) < nbytes:
            buffer = bytearray(nbytes)
        view = memoryview(buffer)[:nbytes]
        cast_into(rows, piece.heads, torch.frombuffer(view, dtype=target), self.scratch)
        return Encoded(view, piece.out_offset, buffer)

    def write(self, item: Encoded | CopyPiece) -> None:
        """Write a produced piece (the only place that writes data to the output)."""
        if isinstance(item, CopyPiece):
            copy_range(self.source(item.file), item.src_offset, self.out_fd, item.out_offset, item.nbytes)
            return
        write_at(self.out_fd, item.data, item.out_offset)
        if item.buffer is not None:
            self.free.put(item.buffer)

    def read(self, piece: EncodePiece) -> torch.Tensor:
        """The piece's rows as a (rows, cols) tensor over this thread's read buffer."""
        nbytes = piece.rows * piece.cols * piece.dtype.itemsize
        view, fd, done = self.scratch("read", nbytes), self.source(piece.file), 0
        while done < nbytes:
            got = os.preadv(fd, [view[done:]], piece.src_offset + done)
            if got <= 0:
                raise ValueError(f"{piece.file} ends at byte {piece.src_offset + done}: the file is truncated; "
                                 "re-save the model.")
            done += got
        return torch.frombuffer(view, dtype=piece.dtype).view(piece.rows, piece.cols)

    def close(self) -> None:
        """Close the source descriptors."""
        for fd in self.sources.values():
            os.close(fd)
        self.sources.clear()


def permuted(rows: torch.Tensor, heads: int) -> torch.Tensor:
    """transformers' rotate-half rows -> GGML's interleaved pairs, per head (llama.cpp's `LlamaModel.permute`)."""
    if not heads:
        return rows
    count, cols = rows.shape
    return rows.view(heads, 2, count // heads // 2, cols).transpose(1, 2)


def cast_into(rows: torch.Tensor, heads: int, out: torch.Tensor, scratch) -> None:
    """Permute `rows` (if `heads`) and cast them into the flat `out`, through a float32 scratch where that is faster.

    torch's direct bf16 -> f16 copy is 2-4x slower here than bf16 -> f32 -> f16 on a cache-sized piece.
    """
    source = permuted(rows, heads)
    if rows.dtype == torch.float32 or out.dtype in (torch.float32, rows.dtype):
        out.view(source.shape).copy_(source)
        return
    wide = torch.frombuffer(scratch("wide", rows.numel() * 4), dtype=torch.float32)
    wide.view(source.shape).copy_(source)
    out.copy_(wide)


def quantize(rows: torch.Tensor, piece: EncodePiece) -> memoryview:
    """Q8_0 / Q4_0 bytes of the (permuted) rows, by gguf-py's quantizer."""
    import gguf

    data = permuted(rows, piece.heads).reshape(piece.rows, piece.cols).to(torch.float32).numpy()
    return memoryview(gguf.quants.quantize(data, gguf.GGMLQuantizationType(piece.ggml_type))).cast("B")


def write_at(fd: int, data, offset: int) -> None:
    """All of `data` at `offset` (pwrite may write less than asked)."""
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def copy_range(src_fd: int, src_offset: int, out_fd: int, out_offset: int, nbytes: int) -> None:
    """`nbytes` from `src_offset` to `out_offset` by the kernel (copy_file_range); pread/pwrite where unsupported."""
    while nbytes:
        try:
            copied = os.copy_file_range(src_fd, out_fd, nbytes, src_offset, out_offset)
        except (AttributeError, OSError):  # other OS, other file systems (EXDEV), old kernels
            copied = os.pwrite(out_fd, os.pread(src_fd, min(nbytes, 16 << 20), src_offset), out_offset)
        if copied <= 0:
            raise OSError(f"could not copy {nbytes} bytes at offset {src_offset}: the source is shorter than expected")
        src_offset, out_offset, nbytes = src_offset + copied, out_offset + copied, nbytes - copied


def write_pieces(out_fd: int, pieces: Sequence, workers: int, depth: int | None = None) -> None:
    """Write every piece into `out_fd`: `workers` - 1 threads produce ahead while this thread writes (1: in turn)."""
    writer = DataWriter(out_fd)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # parallel over pieces, not inside a cast: OpenMP barriers cost more than they give
    try:
        if workers <= 1:
            for piece in pieces:
                writer.write(writer.produce(piece))
        else:
            pipelined(writer, pieces, workers - 1, depth or DEPTH)
    finally:
        torch.set_num_threads(threads)
        writer.close()


def pipelined(writer: DataWriter, pieces: Sequence, producers: int, depth: int) -> None:
    """Producers read/cast up to `depth` pieces ahead; this thread writes them in file order."""
    pool = ThreadPoolExecutor(max_workers=producers)
    window: deque = deque()
    try:
        for piece in pieces:
            window.append(pool.submit(writer.produce, piece))
            if len(window) >= depth:
                writer.write(window.popleft().result())  # re-raises a producer's failure
        while window:
            writer.write(window.popleft().result())
    finally:
        pool.shutdown(cancel_futures=True)
