"""Batched (optionally multi-process) tokenization of documents, for any Hugging Face tokenizer or SentencePiece.

Documents are encoded without special tokens; the packer adds BOS/EOS itself. Hugging Face fast tokenizers already
encode a batch on several threads (Rust); `num_proc > 1` adds worker processes on top. They are spawned (forking
after tokenizers' thread pool has run can deadlock), each pays a few seconds of start-up importing this package,
and they pay off only on many cores or for slow (Python) tokenizers; the demo uses one process.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

_WORKER_TOKENIZER: Any = None


def special_ids(tokenizer: Any) -> tuple[int, int]:
    """(bos_id, eos_id) of a Hugging Face tokenizer or a SentencePieceProcessor; ValueError if either is missing."""
    if hasattr(tokenizer, "bos_token_id"):
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    elif hasattr(tokenizer, "bos_id"):  # sentencepiece.SentencePieceProcessor (-1 means "none")
        bos, eos = tokenizer.bos_id(), tokenizer.eos_id()
        bos, eos = (None if bos < 0 else bos), (None if eos < 0 else eos)
    else:
        raise TypeError("Expected a Hugging Face tokenizer or a SentencePieceProcessor, "
                        f"got {type(tokenizer).__name__}.")
    if bos is None or eos is None:
        raise ValueError(f"The tokenizer has no {'BOS' if bos is None else 'EOS'} token id; packing puts BOS at each "
                         "document start and EOS at its end (the paper's tokenizer: <s>=1, </s>=2). "
                         "Set bos_token/eos_token.")
    return int(bos), int(eos)


def encode_texts(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, without BOS/EOS (HF tokenizer, `tokenizers.Tokenizer` or SentencePieceProcessor)."""
    if not texts:
        return []
    if hasattr(tokenizer, "encode_batch"):  # a bare `tokenizers.Tokenizer` (the backend of a fast tokenizer)
        return [encoding.ids for encoding in tokenizer.encode_batch(texts, add_special_tokens=False)]
    if hasattr(tokenizer, "bos_token_id"):
        # verbose=False: documents longer than model_max_length are expected here (they get packed, not truncated)
        return [list(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]
    return [list(ids) for ids in tokenizer.encode(texts)]


def _init_worker(tokenizer: Any) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = tokenizer


def _encode_in_worker(texts: list[str]) -> list[list[int]]:
    return encode_texts(_WORKER_TOKENIZER, texts)


class BatchEncoder:
    """Callable that tokenizes a list of documents, on `num_proc` processes when that is more than 1."""

    def __init__(self, tokenizer: Any, num_proc: int = 1):
        if num_proc < 1:
            raise ValueError(f"num_proc must be >= 1, got {num_proc}.")
        self.tokenizer = tokenizer
        self.bos_id, self.eos_id = special_ids(tokenizer)
        self.num_proc = num_proc
        self._pool: ProcessPoolExecutor | None = None

    def __call__(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text (no special tokens), in order."""
        if self.num_proc == 1 or len(texts) < 2 * self.num_proc:
            return encode_texts(self.tokenizer, texts)
        if self._pool is None:
            # A fast tokenizer travels as its Rust backend, so workers need not import its Python class's package.
            payload = getattr(self.tokenizer, "backend_tokenizer", None) or self.tokenizer
            self._pool = ProcessPoolExecutor(self.num_proc, mp_context=get_context("spawn"),
                                             initializer=_init_worker, initargs=(payload,))
        size = -(-len(texts) // self.num_proc)
        chunks = [texts[i: i + size] for i in range(0, len(texts), size)]
        return [ids for part in self._pool.map(_encode_in_worker, chunks) for ids in part]

    def close(self) -> None:
        """Stop the worker processes, if any."""
        if getattr(self, "_pool", None) is not None:  # __init__ may have failed before creating it
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pool": None}

    def __del__(self) -> None:
        self.close()


__all__ = ["BatchEncoder", "encode_texts", "special_ids"]
