"""Training from token shards (`llama-paper prepare-data` / `tokenize-data`): memory-mapped, no tokenization in
the training process, each rank reading only its own rows.

A source is a folder of `<rank>.ds` files (uint16/uint32 token ids, `[BOS] ids [EOS]` per document) read as one
concatenated token stream, cut into `seq_len`-token windows (documents run across windows, as in `PackedStream`).
The i-th global sequence comes from a source drawn with the mixture's probabilities from an RNG seeded by
(seed, i // BLOCK) (Megatron's blended dataset, as `PackedStream`); the k-th draw of a source is window
`perm_e[k mod W]` of epoch e = k // W, with a fresh permutation of its W windows per epoch. So the whole position
is (sequence, draws per source): a few integers, identical on every rank, saved in checkpoints.

Each optimizer micro-step consumes a global batch of `micro * world_size` sequences; rank r reads rows
[r * micro, (r + 1) * micro) of it and nothing else. The data (and the loss) do not depend on the number of ranks.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .packing import BLOCK


class TokenSource:
    """One source's shards as a single read-only token array (memory-mapped files, never read whole)."""

    def __init__(self, name: str, folder: str | Path):
        self.name, self.folder = name, Path(folder)
        files = sorted(self.folder.glob("*.ds"))
        if not files:
            raise FileNotFoundError(f"Source {name!r}: no token shards (*.ds) in {self.folder}; run `llama-paper "
                                    "prepare-data` (or tokenize-data) first.")
        self.maps, offsets = [], [0]
        for path in files:
            meta_path = Path(f"{path}.metadata")
            size = json.loads(meta_path.read_text())["token_size"] if meta_path.is_file() else 2
            dtype = {2: np.uint16, 4: np.uint32}[size]
            length = path.stat().st_size // size
            if length:
                self.maps.append(np.memmap(path, dtype=dtype, mode="r", shape=(length,)))
                offsets.append(offsets[-1] + length)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.tokens = int(self.offsets[-1])

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) of the concatenated stream, as int64."""
        out = np.empty(length, dtype=np.int64)
        filled = 0
        index = int(np.searchsorted(self.offsets, start, side="right")) - 1
        while filled < length:
            begin = start + filled - int(self.offsets[index])
            part = self.maps[index][begin: begin + length - filled]
            out[filled: filled + len(part)] = part
            filled += len(part)
            index += 1
        return out


class TokenShardStream:
    """Fixed-length training sequences of a weighted mixture of token-shard sources, for one rank."""

    def __init__(self, sources: dict[str, tuple[str | Path, float]], seq_len: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        if not sources:
            raise ValueError("TokenShardStream needs at least one source folder.")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}.")
        self.seq_len, self.seed, self.rank, self.world_size = seq_len, seed, rank, world_size
        self.source_names = [n for n, (_, w) in sources.items() if w > 0]
        weights = np.array([sources[n][1] for n in self.source_names], dtype=float)
        if not len(weights):
            raise ValueError("At least one token source needs a positive weight.")
        self.probabilities = weights / weights.sum()
        self.sources = {n: TokenSource(n, sources[n][0]) for n in self.source_names}
        self.windows = {}
        for name, source in self.sources.items():
            self.windows[name] = source.tokens // seq_len
            if not self.windows[name]:
                raise ValueError(f"Source {name!r} has {source.tokens} tokens: fewer than one {seq_len}-token "
                                 "sequence.")
        self.sequence = 0
        self.draws = {n: 0 for n in self.source_names}
        self.last_rows: list[tuple[str, int, int]] = []  # (source, epoch, window) of this rank's last rows
        self.last_sources: list[str] = []
        self._block: tuple[int, np.ndarray] | None = None
        self._perm: dict[tuple[str, int], np.ndarray] = {}

    def _sources_of(self, start: int, count: int) -> np.ndarray:
        out = np.empty(count, dtype=np.int64)
        for i in range(count):
            block = (start + i) // BLOCK
            if self._block is None or self._block[0] != block:
                rng = np.random.default_rng([self.seed, 1, block])
                self._block = (block, rng.choice(len(self.source_names), size=BLOCK, p=self.probabilities))
            out[i] = self._block[1][(start + i) % BLOCK]
        return out

    def _window(self, name: str, draw: int) -> tuple[int, int]:
        epoch, position = divmod(draw, self.windows[name])
        key = (name, epoch)
        if key not in self._perm:
            if len(self._perm) > 4 * len(self.source_names):
                self._perm.clear()
            rng = np.random.default_rng([self.seed, zlib.crc32(name.encode()), epoch])
            self._perm[key] = rng.permutation(self.windows[name])
        return epoch, int(self._perm[key][position])

    def next_batch(self, micro_batch_size: int) -> torch.Tensor:
        """This rank's rows (micro_batch_size, seq_len) of the next global batch of micro * world_size sequences."""
        total = micro_batch_size * self.world_size
        chosen = self._sources_of(self.sequence, total)
        mine = range(self.rank * micro_batch_size, (self.rank + 1) * micro_batch_size)
        rows, self.last_rows, self.last_sources = [], [], []
        for i, index in enumerate(chosen):
            name = self.source_names[int(index)]
            draw = self.draws[name]
            self.draws[name] = draw + 1
            if i in mine:  # the other ranks' rows are only counted, never read
                epoch, window = self._window(name, draw)
                rows.append(self.sources[name].read(window * self.seq_len, self.seq_len))
                self.last_rows.append((name, epoch, window))
                self.last_sources.append(name)
        self.sequence += total
        return torch.from_numpy(np.stack(rows))

    def state_dict(self) -> dict[str, Any]:
        """The position (identical on every rank): sequence counter and draws per source."""
        return {"kind": "token_shards", "seq_len": self.seq_len, "seed": self.seed, "sources": list(self.source_names),
                "windows": dict(self.windows), "sequence": self.sequence, "draws": dict(self.draws)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position; the next batches equal those of the uninterrupted run."""
        mine = self.state_dict()
        for key in ("kind", "seq_len", "seed", "sources", "windows"):
            if state.get(key) != mine[key]:
                raise ValueError(f"Cannot resume: the saved token-shard stream has {key}={state.get(key)!r} but this "
                                 f"one has {mine[key]!r}; resume with the same mixture, shards and settings.")
        self.sequence = int(state["sequence"])
        self.draws = {n: int(v) for n, v in state["draws"].items()}

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per source: tokens delivered so far (all ranks) and epochs (passes over its windows; Table 1)."""
        return {n: {"tokens": self.draws[n] * self.seq_len, "epochs": self.draws[n] / self.windows[n],
                    "epochs_estimated": False} for n in self.source_names}

    def close(self) -> None:
        """Nothing to release (memory maps close with the object); `PackedStream`'s interface."""


def next_rank_batch(stream, micro_batch_size: int, rank: int, world_size: int) -> torch.Tensor:
    """This rank's micro-batch: a token-shard stream reads only its rows; a `PackedStream` (text, tokenized on the
    fly) draws the whole global batch on every rank and keeps its slice."""
    if isinstance(stream, TokenShardStream):
        return stream.next_batch(micro_batch_size)
    global_batch = stream.next_batch(micro_batch_size * world_size)  # identical on every rank
    return global_batch[rank * micro_batch_size:(rank + 1) * micro_batch_size]


def token_sources(mixture) -> dict[str, tuple[Path, float]] | None:
    """{name: (shard folder, weight)} when every weighted source of a mixture names `tokens`; else None."""
    weighted = [s for s in mixture.sources if s.weight > 0]
    if not weighted or not all(s.tokens for s in weighted):
        if any(s.tokens for s in weighted):
            raise ValueError(f"Mixture {mixture.name!r}: either every weighted source names `tokens` (token shards) "
                             "or none does; a mixture cannot mix shards with on-the-fly tokenization.")
        return None
    return {s.name: (mixture.base_dir / s.tokens, s.weight) for s in weighted}


__all__ = ["TokenShardStream", "TokenSource", "next_rank_batch", "token_sources"]
