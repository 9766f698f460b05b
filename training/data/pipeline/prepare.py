"""`prepare_data`: every source's datatrove pipeline, then tokenization into shards, then the report."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from .config import DataConfig
from .executors import ExecutorOptions, chain, slurm_dry_run
from .sources import Layout, Stage, source_stages, work_reader
from .tokenize import SentencePieceShardWriter


def tokenize_stage(config: DataConfig, layout: Layout, tasks: int, tokenizer: str | None = None) -> Stage:
    """Documents of OUT/docs/<source> -> OUT/tokens/<source>/*.ds."""
    model = tokenizer or config.tokenizer
    if not model:
        raise ValueError("Tokenizing needs a tokenizer: `tokenizer:` in the data config or --tokenizer "
                         "(a tokenizer.model or a folder from `llama-paper train-tokenizer`).")
    return Stage("tokenize", [work_reader(layout.docs()), SentencePieceShardWriter(model, layout.tokens())], tasks)


def selected_sources(config: DataConfig, names: list[str] | None) -> list:
    """The config's sources, or those named (ValueError for an unknown name)."""
    return [config.source(n) for n in names] if names else list(config.sources)


def prepare_data(config: DataConfig, output_dir: str | Path, options: ExecutorOptions | None = None, tasks: int = 1,
                 sources: list[str] | None = None, filter: bool = True, tokenize: bool = True,
                 tokenizer: str | None = None) -> dict:
    """Run the pipelines (filter and/or tokenize) of the selected sources; returns what ran (and Slurm scripts)."""
    options = options or ExecutorOptions()
    output_dir = Path(output_dir)
    scripts: list[dict] = []
    for source in selected_sources(config, sources):
        layout = Layout(output_dir, source.name)
        stages = source_stages(source, config, output_dir, tasks) if filter else []
        docs = Path(layout.docs())
        if not filter and "://" not in str(docs) and not (docs.is_dir() and any(docs.glob("*.jsonl*"))):
            raise FileNotFoundError(f"No prepared documents of {source.name!r} in {docs}: run `llama-paper "
                                    "prepare-data` (without --no-tokenize) or its filtering first.")
        if tokenize:
            stages.append(tokenize_stage(config, layout, tasks, tokenizer))
        if not stages:
            continue
        last = chain(stages, [layout.logs(s.name) for s in stages], options, f"{config.name}-{source.name}")
        if options.kind == "slurm" and options.dry_run:
            with slurm_dry_run(scripts):
                last.run()
        else:
            last.run()
    if options.kind == "local":
        write_mixture(config, output_dir, sources)
        from .report import write_report
        write_report(config, output_dir, sources)
    return {"output_dir": str(output_dir), "slurm_scripts": scripts}


def write_mixture(config: DataConfig, output_dir: Path, sources: list[str] | None = None) -> Path | None:
    """OUT/mixture.yaml: a training mixture naming the token shards, with the data config's weights."""
    entries = [{"name": s.name, "tokens": f"tokens/{s.name}", "weight": s.weight}
               for s in selected_sources(config, sources) if (output_dir / "tokens" / s.name).is_dir()]
    if not entries:
        return None
    path = output_dir / "mixture.yaml"
    path.write_text("# Written by `llama-paper prepare-data`: train with `llama-paper pretrain --mixture "
                    f"{path}`.\n" + yaml.safe_dump({"name": config.name, "seed": 0, "sources": entries},
                                                   sort_keys=False))
    return path


