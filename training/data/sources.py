"""Where documents come from: local txt/jsonl/parquet files (paths, directories, globs) or `datasets` (Hub ids).

A source yields *cleaned* documents, one split at a time. Our train/validation split is carved out of the
source's documents by index, so it is deterministic, needs no second pass and works on streams: document `i`
(counted in the source's natural order, after dropping empty documents for local files) is held out for
validation when `floor((i+1)·f) > floor(i·f)`, i.e. exactly `floor(n·f)` documents, evenly spread over the
source (every 20th document for f = 0.05).

Local sources are read into memory once (fine up to a few GB); larger corpora go through `datasets` with
`streaming: true` (a Hub id, or the builders "json"/"parquet"/"text" with `data_files`). The training order is a
fresh permutation per epoch for in-memory sources (seeded by the mixture seed, the source name and the epoch) and
a seeded shuffle buffer for streams; resuming a stream at document k re-reads and skips k documents.
"""

from __future__ import annotations

import glob
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .cleaners import apply_cleaners, get_cleaner

LOCAL_FORMATS = {".txt": "txt", ".text": "txt", ".md": "txt", ".jsonl": "jsonl", ".json": "jsonl",
                 ".ndjson": "jsonl", ".parquet": "parquet"}
DOCUMENT_MODES = ("file", "paragraphs")
SPLITS = ("train", "validation")


@dataclass
class SourceConfig:
    """One entry of a mixture: where its documents come from, how they are cleaned, and its sampling weight."""

    name: str
    weight: float = 1.0
    path: str | list[str] | None = None  # local file(s), directories or globs; relative to the mixture file
    dataset: str | None = None  # a Hub dataset id, or a `datasets` builder name ("json", "parquet", "text")
    config: str | None = None  # the dataset's configuration (RedPajama: "arxiv", "book", ...)
    split: str = "train"  # the dataset's split we read; our train/validation split is carved out of it
    data_files: str | list[str] | None = None
    revision: str | None = None
    text_field: str = "text"
    format: str | None = None  # local files: txt | jsonl | parquet; inferred from the extension when None
    cleaners: list[str] = field(default_factory=list)
    documents: str = "file"  # local: one document per file/record, or blank-line "paragraphs" merged to min_chars
    min_chars: int = 0
    streaming: bool | None = None  # datasets sources: default True; local sources are always read into memory
    shuffle: bool = True
    shuffle_buffer: int = 10_000  # streaming only
    validation_fraction: float | None = None  # None: the mixture's
    tokens: str | None = None  # a folder of token shards (`llama-paper prepare-data`): training reads these

    def __post_init__(self) -> None:
        where = f"Source {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("Every source needs a non-empty `name`.")
        if self.path is not None and self.dataset is not None or (self.path is None and self.dataset is None
                                                                   and self.tokens is None):
            raise ValueError(f"{where}: give exactly one of `path` (local files) or `dataset` (a Hub id), and/or "
                             "`tokens` (a folder of token shards).")
        if not isinstance(self.weight, (int, float)) or self.weight < 0:
            raise ValueError(f"{where}: `weight` must be a number >= 0, got {self.weight!r}.")
        if isinstance(self.cleaners, str):
            self.cleaners = [self.cleaners]
        for name in self.cleaners:
            get_cleaner(name)  # fail at load time, not hours into a run
        if self.documents not in DOCUMENT_MODES:
            raise ValueError(f"{where}: `documents` must be one of {DOCUMENT_MODES}, got {self.documents!r}.")
        if self.format is not None and self.format not in set(LOCAL_FORMATS.values()):
            raise ValueError(f"{where}: `format` must be txt, jsonl or parquet, got {self.format!r}.")
        if self.path is not None and self.streaming:
            raise ValueError(f"{where}: local `path` sources are read into memory; to stream large local files use "
                             "`dataset: json` (or parquet/text) with `data_files:` instead.")
        if self.dataset is not None and self.documents != "file":
            raise ValueError(f"{where}: `documents: {self.documents}` applies to local `path` sources only; "
                             "a dataset's records are its documents.")
        if not isinstance(self.min_chars, int) or self.min_chars < 0 or self.shuffle_buffer < 1:
            raise ValueError(f"{where}: `min_chars` must be an integer >= 0 and `shuffle_buffer` >= 1.")
        if self.validation_fraction is not None and not 0 <= self.validation_fraction < 1:
            raise ValueError(f"{where}: `validation_fraction` must be in [0, 1), got {self.validation_fraction!r}.")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SourceConfig:
        """Build from a mapping (a YAML/JSON entry); unknown keys raise a ValueError listing the allowed ones."""
        allowed = {f.name for f in fields(cls)}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"Source {data.get('name')!r}: unknown key(s) {sorted(unknown)}; "
                             f"allowed: {sorted(allowed)}.")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-serialisable mapping that `from_dict` turns back into an equal config."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def is_validation(index: int, fraction: Fraction) -> bool:
    """Whether document `index` of a source is held out: exactly floor(n·f) of n, evenly spaced."""
    return (index + 1) * fraction.numerator // fraction.denominator > index * fraction.numerator // fraction.denominator


def source_seed(seed: int, name: str, epoch: int) -> list[int]:
    """Seed material for one source's order in one epoch (stable across processes, unlike `hash`)."""
    return [seed, zlib.crc32(name.encode()), epoch]


class LocalSource:
    """In-memory documents from local txt/jsonl/parquet files, split into train/validation by index."""

    def __init__(self, config: SourceConfig, base_dir: Path, validation_fraction: float):
        self.config = config
        self.files = resolve_files(config, base_dir)
        self.fraction = Fraction(validation_fraction).limit_denominator(1_000_000)
        self._splits: dict[str, list[str]] | None = None

    def _load(self) -> dict[str, list[str]]:
        if self._splits is None:
            documents = [d for path in self.files for d in self._read(path)]
            splits: dict[str, list[str]] = {"train": [], "validation": []}
            for i, doc in enumerate(documents):
                splits["validation" if is_validation(i, self.fraction) else "train"].append(doc)
            self._splits = splits
        return self._splits

    def _read(self, path: Path) -> Iterator[str]:
        kind = self.config.format or LOCAL_FORMATS[path.suffix.lower()]
        names = self.config.cleaners
        if kind == "txt":
            text = apply_cleaners(path.read_text(encoding="utf-8", errors="replace"), names)
            yield from split_documents(text, self.config.documents, self.config.min_chars)
            return
        for raw in self._records(path, kind):
            yield from split_documents(apply_cleaners(raw, names), self.config.documents, self.config.min_chars)

    def _records(self, path: Path, kind: str) -> Iterator[str]:
        field_name = self.config.text_field
        if kind == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            if field_name not in table.column_names:
                raise ValueError(f"Source {self.config.name!r}: {path} has no column {field_name!r} "
                                 f"(columns: {table.column_names}); set `text_field`.")
            yield from (str(t) for t in table.column(field_name).to_pylist() if t is not None)
            return
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                record = json.loads(line)
                if field_name not in record:
                    raise ValueError(f"Source {self.config.name!r}: {path}:{number} has no field {field_name!r} "
                                     f"(keys: {sorted(record)}); set `text_field`.")
                yield str(record[field_name])

    def num_documents(self, split: str) -> int:
        """Number of documents in `split`."""
        return len(self._load()[split])

    def iter_documents(self, split: str, epoch: int, start: int, seed: int) -> Iterator[str]:
        """Documents of `split` in this epoch's order, from position `start` on."""
        documents = self._load()[split]
        order: Any = range(len(documents))
        if self.config.shuffle and split == "train":
            order = np.random.default_rng(source_seed(seed, self.config.name, epoch)).permutation(len(documents))
        for i in range(start, len(documents)):
            yield documents[order[i]]


class DatasetSource:
    """Documents from `datasets.load_dataset` (a Hub id or a packaged builder), streamed by default."""

    def __init__(self, config: SourceConfig, base_dir: Path, validation_fraction: float):
        self.config = config
        self.base_dir = base_dir
        self.fraction = Fraction(validation_fraction).limit_denominator(1_000_000)
        self.streaming = True if config.streaming is None else config.streaming
        self._dataset = None
        self._indices: dict[str, list[int]] | None = None
        self._size: int | None = None  # records in the dataset's split, when known without reading it

    def _data_files(self) -> list[str] | None:
        """`data_files` with local entries made relative to the mixture file, like `path`; URLs as they are."""
        data_files = self.config.data_files
        if data_files is None:
            return None
        files = [data_files] if isinstance(data_files, str) else list(data_files)
        return [f if re.match(r"^\w+://", f) else str(self.base_dir / f) for f in files]

    def _load(self):
        if self._dataset is None:
            import datasets

            data_files = self._data_files()
            try:
                self._dataset = datasets.load_dataset(
                    self.config.dataset, self.config.config, split=self.config.split, streaming=self.streaming,
                    data_files=data_files, revision=self.config.revision,
                )
            except RuntimeError as err:
                if "scripts are no longer supported" not in str(err):
                    raise
                # datasets >= 4 dropped loading scripts; RedPajama-Data-1T is one of the datasets that still has one
                raise RuntimeError(
                    f"Source {self.config.name!r}: {self.config.dataset} is a script-based dataset, which datasets "
                    f"{datasets.__version__} cannot load. Point the source at its data files instead: "
                    "`dataset: json` with `data_files:` listing the jsonl URLs (or local copies) the dataset "
                    "publishes, keeping `weight` and `cleaners`; for RedPajama, `llama-paper redpajama-mixture "
                    "urls.txt --output my_mixture.yaml` writes that mixture."
                ) from err
            if self.config.text_field not in (self._dataset.column_names or [self.config.text_field]):
                raise ValueError(f"Source {self.config.name!r}: the dataset has no column {self.config.text_field!r} "
                                 f"(columns: {self._dataset.column_names}); set `text_field`.")
        return self._dataset

    def _clean(self, record: dict) -> str:
        return apply_cleaners(str(record[self.config.text_field] or ""), self.config.cleaners)

    def num_documents(self, split: str) -> int | None:
        """Number of documents in `split`; None for streams (unknown without a full pass)."""
        if self.streaming:
            return None
        return len(self._split_indices()[split])

    def estimated_num_documents(self, split: str) -> int | None:
        """Documents in `split` from the size the dataset knows without being read; None when it knows none.

        Streams: the split's `num_examples` from the dataset card (Hub datasets, or a local folder with a card; not
        when `data_files` picks files of it), else the row counts in the footers of local parquet `data_files`
        (jsonl and text files would need a full read). It is an estimate in that a card can be stale; a stream's
        own count replaces it once its first pass ends (see `SourceCursor.epoch_size`).
        """
        if not self.streaming:
            return self.num_documents(split)
        if self._size is None:
            self._size = self._known_size() or 0
        if not self._size:
            return None
        held_out = self._size * self.fraction.numerator // self.fraction.denominator  # floor(n·f), see is_validation
        return held_out if split == "validation" else self._size - held_out

    def _known_size(self) -> int | None:
        if self.config.data_files is None:  # a card describes the whole dataset, not files picked from it
            splits = getattr(self._load().info, "splits", None) or {}
            info = splits.get(self.config.split) if hasattr(splits, "get") else None
            if info is not None and info.num_examples:
                return int(info.num_examples)
        files: list[str] = []
        for pattern in self._data_files() or []:
            matches = [] if re.match(r"^\w+://", pattern) else sorted(glob.glob(pattern, recursive=True))
            if not matches or any(not m.endswith(".parquet") for m in matches):
                return None  # a URL, a pattern that matches nothing here, or files whose size needs a full read
            files.extend(matches)
        if not files:
            return None
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)

    def _split_indices(self) -> dict[str, list[int]]:
        if self._indices is None:
            n = len(self._load())
            self._indices = {"train": [], "validation": []}
            for i in range(n):
                self._indices["validation" if is_validation(i, self.fraction) else "train"].append(i)
        return self._indices

    def iter_documents(self, split: str, epoch: int, start: int, seed: int) -> Iterator[str]:
        """Cleaned documents of `split` in this epoch's order from position `start` ("" for ones cleaned empty)."""
        dataset = self._load()
        want_validation = split == "validation"
        if not self.streaming:
            indices = self._split_indices()[split]
            order: Any = range(len(indices))
            if self.config.shuffle and split == "train":
                order = np.random.default_rng(source_seed(seed, self.config.name, epoch)).permutation(len(indices))
            for i in range(start, len(indices)):
                yield self._clean(dataset[int(indices[order[i]])])
            return
        fraction = self.fraction
        stream = dataset.filter(lambda _r, i: is_validation(i, fraction) == want_validation, with_indices=True)
        if self.config.shuffle and split == "train":
            stream = stream.shuffle(seed=int(np.random.default_rng(source_seed(seed, self.config.name, 0))
                                             .integers(2**31)), buffer_size=self.config.shuffle_buffer)
            stream.set_epoch(epoch)
        for record in stream.skip(start) if start else stream:
            yield self._clean(record)


def open_source(config: SourceConfig, base_dir: Path, validation_fraction: float) -> LocalSource | DatasetSource:
    """The reader for one source config."""
    if config.path is not None:
        return LocalSource(config, base_dir, validation_fraction)
    return DatasetSource(config, base_dir, validation_fraction)


def resolve_files(config: SourceConfig, base_dir: Path) -> list[Path]:
    """The sorted local files of a source: each `path` entry is a file, a directory (searched recursively) or a glob."""
    patterns = [config.path] if isinstance(config.path, str) else list(config.path or [])
    files: list[Path] = []
    for pattern in patterns:
        full = Path(pattern).expanduser()
        full = full if full.is_absolute() else base_dir / full
        if full.is_dir():
            matches = [p for p in full.rglob("*") if p.is_file() and p.suffix.lower() in LOCAL_FORMATS]
        else:
            matches = [Path(p) for p in glob.glob(str(full), recursive=True) if Path(p).is_file()]
        if not matches:
            raise FileNotFoundError(f"Source {config.name!r}: nothing matches {pattern!r} (looked for {full}); "
                                    "relative paths are relative to the mixture file.")
        for match in matches:
            if config.format is None and match.suffix.lower() not in LOCAL_FORMATS:
                raise ValueError(f"Source {config.name!r}: cannot tell the format of {match}; set `format` to "
                                 "txt, jsonl or parquet.")
        files.extend(sorted(matches))
    return files


def split_documents(text: str, mode: str, min_chars: int = 0) -> list[str]:
    """Cut a cleaned text file into documents: the whole file, or blank-line paragraphs merged to >= min_chars."""
    if mode == "file":
        return [text] if text.strip() else []
    documents, current, size = [], [], 0
    for paragraph in re.split(r"\n[ \t]*\n", text):
        paragraph = paragraph.strip("\n")
        if not paragraph.strip():
            continue
        current.append(paragraph)
        size += len(paragraph)
        if size >= min_chars:
            documents.append("\n\n".join(current))
            current, size = [], 0
    if current:  # the short tail is a document of its own rather than silently dropped
        documents.append("\n\n".join(current))
    return documents


__all__ = ["DatasetSource", "LocalSource", "SourceConfig", "is_validation", "open_source", "resolve_files",
           "split_documents"]
