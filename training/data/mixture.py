"""A data mixture (the paper's Table 1): sources with sampling weights, a validation fraction and a seed.

Configs are YAML or JSON files (or dicts) of the form

    name: demo
    seed: 0
    validation_fraction: 0.05
    sources:
      - {name: shakespeare, path: ../../corpus/tinyshakespeare.txt, weight: 0.87, documents: paragraphs}
      - {name: wiki, dataset: togethercomputer/RedPajama-Data-1T, config: wikipedia, weight: 0.045}

Relative local paths are resolved against the config file's folder, so shipped configs work wherever the package
is installed. Weights are normalised to probabilities; see `training.data.packing` for how they are applied.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .sources import SPLITS, DatasetSource, LocalSource, SourceConfig, open_source

MIXTURES_DIR = Path(__file__).resolve().parent.parent / "configs" / "mixtures"


@dataclass
class MixtureConfig:
    """Sources and how to sample them; `base_dir` anchors relative paths (the config file's folder)."""

    sources: list[SourceConfig]
    validation_fraction: float = 0.0
    seed: int = 0
    name: str = "mixture"
    base_dir: Path = field(default_factory=Path.cwd)
    _readers: dict[str, LocalSource | DatasetSource] = field(default_factory=dict, init=False, repr=False,
                                                             compare=False)

    def __post_init__(self) -> None:
        self.sources = [s if isinstance(s, SourceConfig) else SourceConfig.from_dict(s) for s in self.sources]
        if not self.sources:
            raise ValueError("A mixture needs at least one source under `sources`.")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"Source names must be unique, got {names}.")
        if sum(s.weight for s in self.sources) <= 0:
            raise ValueError("At least one source needs a positive `weight`.")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"`validation_fraction` must be in [0, 1), got {self.validation_fraction!r}.")
        self.base_dir = Path(self.base_dir)

    @property
    def probabilities(self) -> dict[str, float]:
        """Each source's sampling probability: its weight over the sum of weights."""
        total = sum(s.weight for s in self.sources)
        return {s.name: s.weight / total for s in self.sources}

    def source(self, name: str) -> SourceConfig:
        """The source config called `name`."""
        for s in self.sources:
            if s.name == name:
                return s
        names = [s.name for s in self.sources]
        raise ValueError(f"No source named {name!r} in mixture {self.name!r}; sources: {names}.")

    def reader(self, name: str) -> LocalSource | DatasetSource:
        """The (cached) document reader of one source."""
        if name not in self._readers:
            source = self.source(name)
            fraction = self.validation_fraction if source.validation_fraction is None else source.validation_fraction
            self._readers[name] = open_source(source, self.base_dir, fraction)
        return self._readers[name]

    def iter_texts(self, split: str = "train", seed: int | None = None) -> Iterator[str]:
        """Every cleaned document of `split` once, sources interleaved by their probabilities (for tokenizer training).

        A source that runs out drops out and the others are renormalised, so the pass is finite for finite sources
        and contains each document exactly once; each source's documents come in its first training epoch's order.
        """
        check_split(split)
        seed = self.seed if seed is None else seed
        rng = np.random.default_rng([seed, 7])
        live = {s.name: self.reader(s.name).iter_documents(split, epoch=0, start=0, seed=seed)
                for s in self.sources if s.weight > 0 and (s.path is not None or s.dataset is not None)}
        weights = {s.name: s.weight for s in self.sources}
        while live:
            names = list(live)
            p = np.array([weights[n] for n in names], dtype=float)
            name = names[rng.choice(len(names), p=p / p.sum())]
            try:
                text = next(live[name])
            except StopIteration:
                del live[name]
                continue
            if text.strip():
                yield text

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-serialisable description (for model cards and run_info); paths stay as written."""
        return {"name": self.name, "seed": self.seed, "validation_fraction": self.validation_fraction,
                "sources": [s.to_dict() for s in self.sources]}


def check_split(split: str) -> None:
    """Raise a ValueError unless `split` is "train" or "validation"."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")


def load_mixture(path_or_dict: str | Path | dict | MixtureConfig) -> MixtureConfig:
    """Load a mixture from a YAML/JSON file or shipped name ("demo"), a dict (relative paths against the cwd)."""
    if isinstance(path_or_dict, MixtureConfig):
        return path_or_dict
    if isinstance(path_or_dict, dict):
        data, base_dir = dict(path_or_dict), Path(path_or_dict.get("base_dir", Path.cwd()))
    else:
        path = resolve_mixture(path_or_dict)
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ValueError(f"Mixture config {path} must be a mapping with a `sources` list.")
        base_dir = path.resolve().parent
        data.setdefault("name", path.stem)
    allowed = {"name", "seed", "validation_fraction", "sources", "base_dir"}
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"Mixture config: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}.")
    if not isinstance(data.get("sources"), list):
        raise ValueError("Mixture config: `sources` must be a list of source mappings.")
    data["base_dir"] = base_dir
    return MixtureConfig(**data)


def demo_mixture_path() -> Path:
    """The shipped two-source demo mixture (tiny Shakespeare + Alice in Wonderland)."""
    return MIXTURES_DIR / "demo_corpus.yaml"


def resolve_mixture(name_or_path: str | Path) -> Path:
    """A mixture file from a path or a shipped name ("demo", "paper", or a file stem in configs/mixtures)."""
    if str(name_or_path) == "demo":
        return demo_mixture_path()
    if str(name_or_path) == "paper":
        return paper_mixture_path()
    shipped = MIXTURES_DIR / f"{name_or_path}.yaml"
    if isinstance(name_or_path, str) and "/" not in name_or_path and shipped.is_file():
        return shipped
    path = Path(name_or_path)
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in MIXTURES_DIR.glob("*.yaml")))
        raise FileNotFoundError(f"Mixture {name_or_path!r} is neither a file nor a shipped mixture "
                                f"({names}, demo, paper).")
    return path


def paper_mixture_path() -> Path:
    """The paper's Table 1 mixture over RedPajama-Data-1T on the Hub."""
    return MIXTURES_DIR / "paper_redpajama.yaml"


__all__ = ["MixtureConfig", "check_split", "demo_mixture_path", "load_mixture", "paper_mixture_path", "resolve_mixture"]
