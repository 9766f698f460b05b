"""The bytes before a GGUF file's tensor data: magic, version, counts, key-values, tensor infos, padding.

gguf-py's `GGUFWriter` collects the key-values with llama.cpp's key names and value types (`add_*`), and its
`write_kv_data_to_file` packs them one element at a time with `struct` (about a second for a 32000-token vocabulary
on this project's machine). This module writes the same bytes (the tests compare them with `GGUFWriter`'s) with
numpy for the large arrays, and lays out where each tensor's data goes. Format: gguf-py `gguf_writer.py`
(`write_header_to_file`, `write_kv_data_to_file`, `write_ti_data_to_file`) and llama.cpp's `docs/gguf.md`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

GGUF_MAGIC = 0x46554747  # "GGUF" read as a little-endian uint32
GGUF_VERSION = 3
# GGUFValueType -> struct format of the scalar types (gguf-py's `_simple_value_packing`); the rest are STRING/ARRAY.
SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9
NUMPY_TYPES = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1", 10: "<u8",
               11: "<i8", 12: "<f8"}


def encode_string(value: str | bytes) -> bytes:
    """A GGUF string: uint64 length, then the UTF-8 bytes."""
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return struct.pack("<Q", len(data)) + data


def element_type(values: Sequence) -> int:
    """GGUFValueType of an array's elements, as gguf-py infers it (`GGUFValueType.get_type` of the first one)."""
    import gguf

    return int(gguf.GGUFValueType.get_type(values[0]))


def encode_array(values: Sequence, sub_type: int | None) -> bytes:
    """A GGUF array: element type, uint64 count, the elements (numpy for numbers, one join for strings)."""
    if len(values) == 0:
        raise ValueError("GGUF arrays cannot be empty (gguf-py refuses them too)")
    kind = element_type(values) if sub_type is None else int(sub_type)
    head = struct.pack("<IQ", kind, len(values))
    if kind == STRING:
        return head + b"".join(encode_string(v) for v in values)
    if kind in NUMPY_TYPES:
        return head + np.asarray(values).astype(NUMPY_TYPES[kind], casting="unsafe").tobytes()
    return head + b"".join(encode_value(v, kind, None, typed=False) for v in values)  # arrays of arrays


def encode_value(value, kind: int, sub_type: int | None, typed: bool = True) -> bytes:
    """One value, preceded by its uint32 type when `typed` (as in a key-value pair)."""
    kind = int(kind)
    head = struct.pack("<I", kind) if typed else b""
    if kind in SCALAR_FORMATS:
        return head + struct.pack("<" + SCALAR_FORMATS[kind], value)
    if kind == STRING:
        return head + encode_string(value)
    if kind == ARRAY:
        return head + encode_array(value, sub_type)
    raise ValueError(f"unknown GGUF value type {kind}")


def encode_key_values(kv_data: Mapping) -> bytes:
    """The key-value section from gguf-py's `GGUFWriter.kv_data[0]` (key -> GGUFValue(value, type, sub_type))."""
    return b"".join(
        encode_string(key) + encode_value(item.value, item.type, item.sub_type) for key, item in kv_data.items()
    )


def pad(size: int, alignment: int) -> int:
    """`size` rounded up to a multiple of `alignment` (gguf-py's `ggml_pad`)."""
    return (size + alignment - 1) // alignment * alignment


def tensor_offsets(sizes: Iterable[int], alignment: int) -> list[int]:
    """Each tensor's offset inside the data section: every tensor starts aligned."""
    offsets, offset = [], 0
    for size in sizes:
        offsets.append(offset)
        offset += pad(size, alignment)
    return offsets


def encode_tensor_info(name: str, shape: Sequence[int], ggml_type: int, offset: int) -> bytes:
    """One tensor info: name, dims (GGML order: fastest first, i.e. numpy's reversed), type, data offset."""
    dims = struct.pack(f"<I{len(shape)}Q", len(shape), *reversed(tuple(shape)))
    return encode_string(name) + dims + struct.pack("<IQ", int(ggml_type), offset)


def encode_header(kv_data: Mapping, infos: Sequence[tuple[str, Sequence[int], int, int]], alignment: int) -> bytes:
    """Everything before the first tensor's data, padded to `alignment`: infos are (name, shape, type, offset)."""
    head = struct.pack("<IIQQ", GGUF_MAGIC, GGUF_VERSION, len(infos), len(kv_data))
    body = head + encode_key_values(kv_data) + b"".join(encode_tensor_info(*info) for info in infos)
    return body + bytes(pad(len(body), alignment) - len(body))
