"""Packing a mixture into fixed-length training sequences, with an exactly resumable position.

Every source keeps its own token stream: its documents in order, each as `[BOS] + ids + [EOS]`, concatenated
with no padding; a sequence is the next `seq_len` tokens of one source's stream (documents run across sequence
boundaries, so no token is lost or repeated). Which source the i-th sequence comes from is drawn with the mixture's
probabilities from an RNG seeded by (seed, i // 4096): this is Megatron's "blended dataset" scheme, which makes the
*token* proportions equal the configured sampling proportions whatever the document lengths (Table 1 gives token
proportions), and lets the state be a few counters: the sequence index and, per source, (epoch, document, token
offset) plus consumption counts. Restoring them re-reads and re-tokenizes from that document, which reproduces the
uninterrupted stream exactly; no buffered data goes into a checkpoint.

The training split repeats each source forever (a new shuffled order per epoch); the validation split is read once,
source after source in config order, in natural order, and its last incomplete sequence per source is dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .encoding import BatchEncoder
from .mixture import MixtureConfig, check_split, load_mixture
from .sources import DatasetSource, LocalSource

BLOCK = 4096  # sequences whose sources are drawn from one RNG


class SourceCursor:
    """The position in one source's packed token stream, and what it has consumed so far."""

    def __init__(self, name: str, reader: LocalSource | DatasetSource, split: str, seed: int, encoder: BatchEncoder,
                 repeat: bool, batch_docs: int):
        self.name, self.reader, self.split, self.seed = name, reader, split, seed
        self.encoder, self.repeat, self.batch_docs = encoder, repeat, batch_docs
        self.offset = 0  # tokens of the head document already consumed
        self.tokens = 0
        self.documents = 0  # documents whose EOS has been consumed
        self.epoch_length: int | None = None  # document positions per epoch, once known
        self._read_epoch = 0  # position of the next document to read from the source
        self._read_doc = 0
        self._iterator: Iterator[str] | None = None
        self._pending: deque[tuple[int, int, np.ndarray]] = deque()  # (epoch, doc, tokens) read, not fully consumed

    def _fill(self) -> None:
        texts, positions = [], []
        wraps_without_text = 0
        while len(texts) < self.batch_docs:
            if self._iterator is None:
                self._iterator = self.reader.iter_documents(self.split, self._read_epoch, self._read_doc, self.seed)
            try:
                text = next(self._iterator)
            except StopIteration:
                self._iterator = None
                self.epoch_length = self._read_doc  # the iterator ran to the end of the epoch
                if not self.repeat:
                    break
                wraps_without_text += 1
                if wraps_without_text > 1:  # a whole epoch went by without a non-empty document
                    raise ValueError(f"Source {self.name!r} has no {self.split} documents; check its path/dataset, "
                                     "its cleaners and validation_fraction.")
                self._read_epoch, self._read_doc = self._read_epoch + 1, 0
                continue
            position = (self._read_epoch, self._read_doc)
            self._read_doc += 1
            if text.strip():
                texts.append(text)
                positions.append(position)
                wraps_without_text = 0
        for (epoch, doc), ids in zip(positions, self.encoder(texts)):
            row = np.empty(len(ids) + 2, dtype=np.int64)
            row[0], row[1:-1], row[-1] = self.encoder.bos_id, ids, self.encoder.eos_id
            self._pending.append((epoch, doc, row))

    def take(self, n: int) -> np.ndarray | None:
        """The next `n` tokens; None (consuming nothing) when a finite stream has fewer than `n` left."""
        total = sum(len(row) for _, _, row in self._pending) - self.offset
        while total < n:
            before = len(self._pending)
            self._fill()
            if len(self._pending) == before:
                return None
            total = sum(len(row) for _, _, row in self._pending) - self.offset
        parts, need = [], n
        while need:
            _, _, row = self._pending[0]
            part = row[self.offset: self.offset + need]
            parts.append(part)
            need -= len(part)
            self.offset += len(part)
            if self.offset == len(row):
                self._pending.popleft()
                self.offset = 0
                self.documents += 1
        self.tokens += n
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def position(self) -> tuple[int, int]:
        """(epoch, document) of the first unconsumed token."""
        if self._pending:
            return self._pending[0][0], self._pending[0][1]
        return self._read_epoch, self._read_doc

    def epoch_size(self) -> tuple[int | None, bool]:
        """Document positions per epoch, and whether that is an estimate: until a stream's first pass ends, the
        size its dataset declares (`DatasetSource.estimated_num_documents`); (None, False) when nothing tells it."""
        length = self.epoch_length or self.reader.num_documents(self.split)
        if length:
            return length, False
        consumed = self.offset or self.position() != (0, 0)  # else: a stream never read is not loaded to ask
        if consumed and isinstance(self.reader, DatasetSource):
            estimate = self.reader.estimated_num_documents(self.split)
            if estimate:
                return estimate, True
        return None, False

    def epochs(self) -> float | None:
        """Passes over the source so far (Table 1's "epochs"); None while a stream's length is still unknown."""
        epoch, doc = self.position()
        length, _ = self.epoch_size()
        if not length:
            return float(epoch) if epoch else None
        # The consumed part of the head document counts too: a short run inside one long book is not 0 epochs.
        within = self.offset / len(self._pending[0][2]) if self._pending else 0.0
        return epoch + (doc + within) / length

    def state_dict(self) -> dict[str, Any]:
        """Counters only: where the stream stands and what it has consumed."""
        epoch, doc = self.position()
        return {"epoch": epoch, "doc": doc, "offset": self.offset, "tokens": self.tokens,
                "documents": self.documents, "epoch_length": self.epoch_length}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Jump to a saved position; the next `take` re-reads from that document."""
        self._read_epoch, self._read_doc = int(state["epoch"]), int(state["doc"])
        self.offset, self.tokens, self.documents = int(state["offset"]), int(state["tokens"]), int(state["documents"])
        self.epoch_length = state.get("epoch_length")
        self._iterator = None
        self._pending.clear()


class PackedStream:
    """Fixed-length token sequences from a mixture: infinite for "train", one pass for "validation"."""

    def __init__(self, mixture: MixtureConfig | str | dict, tokenizer: Any, seq_len: int = 2048,
                 seed: int | None = None, split: str = "train", source: str | None = None, batch_docs: int = 64,
                 num_proc: int = 1):
        check_split(split)
        if seq_len < 1:
            raise ValueError(f"seq_len must be a positive number of tokens, got {seq_len}.")
        self.mixture = load_mixture(mixture)
        self.seq_len, self.split = seq_len, split
        self.seed = self.mixture.seed if seed is None else seed
        if source is not None:
            names = [self.mixture.source(source).name]
        else:
            names = [s.name for s in self.mixture.sources if s.weight > 0 or split == "validation"]
        self.source_names = names
        weights = np.array([self.mixture.source(n).weight for n in names], dtype=float)
        self.probabilities = weights / weights.sum() if weights.sum() > 0 else np.full(len(names), 1 / len(names))
        self.encoder = BatchEncoder(tokenizer, num_proc=num_proc)
        self.cursors = {n: SourceCursor(n, self.mixture.reader(n), split, self.seed, self.encoder,
                                        repeat=split == "train", batch_docs=batch_docs) for n in names}
        self.sequence = 0  # training: index of the next sequence; validation: index of the current source
        self.last_sources: list[str] = []  # the source of each row of the last batch
        self._block: tuple[int, np.ndarray] | None = None

    def _source_of(self, index: int) -> str:
        block = index // BLOCK
        if self._block is None or self._block[0] != block:
            rng = np.random.default_rng([self.seed, 1, block])
            self._block = (block, rng.choice(len(self.source_names), size=BLOCK, p=self.probabilities))
        return self.source_names[int(self._block[1][index % BLOCK])]

    def _next_row(self) -> tuple[str, np.ndarray] | None:
        if self.split == "train":
            name = self._source_of(self.sequence)
            row = self.cursors[name].take(self.seq_len)
            assert row is not None  # training cursors repeat forever
            self.sequence += 1
            return name, row
        while self.sequence < len(self.source_names):
            name = self.source_names[self.sequence]
            row = self.cursors[name].take(self.seq_len)
            if row is not None:
                return name, row
            self.sequence += 1
        return None

    def next_batch(self, batch_size: int) -> torch.Tensor:
        """A LongTensor (batch_size, seq_len); validation batches may be shorter at the end, then StopIteration."""
        rows, names = [], []
        for _ in range(batch_size):
            item = self._next_row()
            if item is None:
                break
            names.append(item[0])
            rows.append(item[1])
        if not rows:
            raise StopIteration(f"The {self.split} split is exhausted.")
        self.last_sources = names
        return torch.from_numpy(np.stack(rows))

    def iter_batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Batches until the split ends (never, for "train")."""
        while True:
            try:
                yield self.next_batch(batch_size)
            except StopIteration:
                return

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable position: the sequence counter and each source's cursor (a few integers)."""
        return {"seq_len": self.seq_len, "split": self.split, "seed": self.seed, "sources": list(self.source_names),
                "sequence": self.sequence, "cursors": {n: c.state_dict() for n, c in self.cursors.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position; the next batches equal those of the uninterrupted run."""
        mine = self.state_dict()
        for key in ("seq_len", "split", "seed", "sources"):
            if state.get(key) != mine[key]:
                raise ValueError(f"Cannot resume: the saved data stream has {key}={state.get(key)!r} but this one has "
                                 f"{mine[key]!r}; build the PackedStream with the same mixture and settings.")
        self.sequence = int(state["sequence"])
        for name, cursor_state in state["cursors"].items():
            self.cursors[name].load_state_dict(cursor_state)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per source: documents and tokens consumed so far and epochs (passes over the source; Table 1).

        `epochs` is None for a stream whose size is unknown until its first pass ends; `epochs_estimated` is True
        while it is computed from the size the dataset declares rather than from a count of the source.
        """
        stats = {}
        for name, cursor in self.cursors.items():
            epochs = cursor.epochs()
            stats[name] = {"documents": cursor.documents, "tokens": cursor.tokens, "epochs": epochs,
                           "epochs_estimated": epochs is not None and cursor.epoch_size()[1]}
        return stats

    def close(self) -> None:
        """Release tokenizer worker processes, if any."""
        self.encoder.close()


__all__ = ["PackedStream", "SourceCursor"]
