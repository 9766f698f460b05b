"""The data config of `llama-paper prepare-data`: sources (one datatrove pipeline each), local models, tokenizer.

    name: paper_sample
    tokenizer: ../llama-tokenizer/tokenizer.model     # SentencePiece model, or a folder holding tokenizer.model
    models:                                           # local files only: nothing is downloaded
      language_id: models/lid.176.ftz                 # fastText LID (CCNet: lid.176.bin)
      wikiref_classifier: models/wikiref.bin          # `llama-paper train-quality-classifier`
      ngram: models/cc.arpa                           # KenLM .arpa/.bin over SentencePiece pieces, its
                                                      # tokenizer beside it as models/cc.sp.model
                                                      # (`llama-paper train-ngram --tokenizer` writes both)
    sources:
      - {name: common_crawl, kind: commoncrawl, input: common_crawl, weight: 67.0, options: {max_perplexity: 3000}}
      - {name: github, kind: github, input: {path: github, glob: "*.jsonl"}, weight: 4.5}

`input` is a folder (any fsspec path) of JSONL(.gz) files, or {path, glob, text_key}; RedPajama's `meta` mapping is
merged into each document's metadata. Relative paths resolve against the config file's folder. `kind` picks the
paper's steps (training.data.pipeline.sources.KINDS); `options` tune them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MODEL_KEYS = ("language_id", "wikiref_classifier", "ngram")


@dataclass
class SourceSpec:
    """One source of the corpus: where its JSONL files are, which paper steps apply, and its mixture weight."""

    name: str
    kind: str
    path: str
    glob: str = "*.jsonl*"
    text_key: str = "text"
    weight: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """A corpus to prepare: its sources, local model files and the tokenizer that makes its token shards."""

    sources: list[SourceSpec]
    tokenizer: str | None = None
    models: dict[str, str] = field(default_factory=dict)
    name: str = "data"

    def source(self, name: str) -> SourceSpec:
        """The source called `name` (ValueError listing the names otherwise)."""
        for source in self.sources:
            if source.name == name:
                return source
        raise ValueError(f"No source {name!r} in data config {self.name!r}; sources: {[s.name for s in self.sources]}.")

    def model(self, key: str) -> str:
        """The local path of model `key`; a clear error when the config does not give it."""
        if not self.models.get(key):
            raise ValueError(f"The data config needs models.{key} (a local file) for the steps of its sources; "
                             "see `llama-paper train-quality-classifier` / `train-ngram` to build one.")
        return self.models[key]


def _resolve(path: str, base: Path) -> str:
    return path if "://" in path or Path(path).is_absolute() else str((base / path).resolve())


def load_data_config(path: str | Path) -> DataConfig:
    """Read a data config YAML, checking its keys and resolving relative paths against its folder."""
    from .sources import KINDS

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Data config {path} not found (see training/configs/data/ for examples).")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(data) - {"name", "tokenizer", "models", "sources"}
    if unknown:
        raise ValueError(f"Data config {path}: unknown key(s) {sorted(unknown)}; allowed: name, tokenizer, models, "
                         "sources.")
    base = path.resolve().parent
    models = dict(data.get("models") or {})
    bad = set(models) - set(MODEL_KEYS)
    if bad:
        raise ValueError(f"Data config {path}: unknown model(s) {sorted(bad)}; allowed: {list(MODEL_KEYS)}.")
    sources = []
    for entry in data.get("sources") or []:
        entry = dict(entry)
        where = f"Data config {path}, source {entry.get('name')!r}"
        if entry.get("kind") not in KINDS:
            raise ValueError(f"{where}: kind must be one of {sorted(KINDS)}, got {entry.get('kind')!r}.")
        source_input = entry.pop("input", None)
        if isinstance(source_input, str):
            source_input = {"path": source_input}
        if not isinstance(source_input, dict) or "path" not in source_input:
            raise ValueError(f"{where}: `input` must be a folder or a mapping with `path` (and optional glob, "
                             "text_key).")
        allowed = {"name", "kind", "weight", "options"}
        if set(entry) - allowed or set(source_input) - {"path", "glob", "text_key"}:
            raise ValueError(f"{where}: unknown key(s) {sorted((set(entry) - allowed) | (set(source_input) - {'path', 'glob', 'text_key'}))}.")
        source_input["path"] = _resolve(str(source_input["path"]), base)
        sources.append(SourceSpec(**entry, **source_input))
    if not sources:
        raise ValueError(f"Data config {path} has no `sources`.")
    tokenizer = data.get("tokenizer")
    return DataConfig(sources=sources, tokenizer=_resolve(tokenizer, base) if tokenizer else None,
                      models={k: _resolve(str(v), base) for k, v in models.items()},
                      name=data.get("name", path.stem))
