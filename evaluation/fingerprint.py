"""A model's fingerprint for the request cache: weights, config, dtype, tokenizer and the adapter's scoring settings.

Weights are identified by the SHA-256 of their *files* (safetensors, .bin, ...), not of the loaded state dict: a
model spread over GPUs, CPU and disk, or sharded by tensor parallelism, is never whole in one process, and hashing a
65B state dict would copy 130 GB off the GPUs on every run. A file's hash is computed once and remembered in the
cache by (path, size, mtime), and for a Hub snapshot it is free: the file is a link to `blobs/<sha256 of content>`.
Hashing content (not paths) means a copied folder shares its cache entries, and re-saved weights never do. A model
object with no folder behind it falls back to hashing its parameters in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

import torch

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5")
_BLOB = re.compile(r"^[0-9a-f]{64}$")


def sha256_file(path: str, chunk: int = 1 << 24) -> str:
    """SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _weight_file_hash(path: str, cache: Any) -> str:
    real = os.path.realpath(path)
    name, parent = os.path.basename(real), os.path.basename(os.path.dirname(real))
    if parent == "blobs" and _BLOB.match(name):  # Hugging Face Hub cache: LFS blobs are named by their SHA-256
        return name
    return cache.file_hash(path, sha256_file) if cache is not None else sha256_file(path)


def weights_digest(folder: str, cache: Any = None) -> str:
    """Hash of the weight files in `folder` (names and contents)."""
    files = sorted(f for f in os.listdir(folder) if f.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"No weight files ({', '.join(WEIGHT_SUFFIXES)}) in {folder} to fingerprint.")
    return _digest([(f, _weight_file_hash(os.path.join(folder, f), cache)) for f in files])


def state_dict_digest(model: torch.nn.Module) -> str:
    """Hash of a model's parameters and buffers as loaded in memory."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def tokenizer_digest(tokenizer: Any) -> str:
    """Hash of what decides a tokenizer's ids: its full serialisation (fast) or vocabulary, plus its settings."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        body = backend.to_str()
    elif hasattr(tokenizer, "sp_model"):
        body = tokenizer.sp_model.serialized_model_proto().hex()
    else:
        body = json.dumps(sorted(tokenizer.get_vocab().items()))
    settings = {k: v for k, v in getattr(tokenizer, "init_kwargs", {}).items()
                if isinstance(v, (bool, int, float, str)) and not k.endswith(("_file", "name_or_path"))}
    return _digest([type(tokenizer).__name__, body, settings, str(tokenizer.special_tokens_map)])


def config_digest(config: Any) -> str:
    """Hash of a model config, without where it was loaded from or which transformers wrote it."""
    if config is None:
        return ""
    d = config.to_dict()
    for k in ("_name_or_path", "transformers_version", "distributed_config", "tp_plan", "tp_size"):
        d.pop(k, None)
    return _digest(d)


def model_fingerprint(model: torch.nn.Module, tokenizer: Any, folder: str | None, settings: dict[str, Any],
                      cache: Any = None) -> str:
    """The fingerprint that scopes a model's cache entries."""
    weights = weights_digest(folder, cache) if folder else state_dict_digest(model)
    dtype = next((str(p.dtype) for p in model.parameters() if p.is_floating_point()), "none")
    return _digest([weights, config_digest(getattr(model, "config", None)), dtype, tokenizer_digest(tokenizer),
                    settings])


def local_folder(path: str) -> str | None:
    """The local folder holding a model given as a folder or a Hub id already in the local Hub cache."""
    if os.path.isdir(path):
        return path
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(path, local_files_only=True)
    except Exception:  # not cached locally: the caller falls back to the in-memory hash
        return None


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()
