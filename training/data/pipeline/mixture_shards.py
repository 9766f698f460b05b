"""The main job's data path: a text mixture's training documents through the pipeline into token shards.

`llama-paper pretrain` with `prepare_data: true` (the demo preset) writes each source's training split (the same
documents, cleaners and validation hold-out as the streaming path) as JSONL, runs the datatrove pipeline of kind
`text` and the SentencePiece tokenization on `tasks` tasks, and trains from the shards. A rerun (or --resume)
finds the completed tasks and skips them.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path


def write_inputs(mixture, folder: Path, tasks: int) -> None:
    """Each weighted text source's training documents as `tasks` JSONL files (round-robin), written once."""
    done = folder / ".complete"
    if done.is_file():
        return
    for source in mixture.sources:
        if source.weight <= 0 or (source.path is None and source.dataset is None):
            continue
        target = folder / source.name
        target.mkdir(parents=True, exist_ok=True)
        handles = [(target / f"{i:05d}.jsonl").open("w", encoding="utf-8") for i in range(tasks)]
        reader = mixture.reader(source.name)
        for index, text in enumerate(reader.iter_documents("train", epoch=0, start=0, seed=mixture.seed)):
            if text.strip():
                handles[index % tasks].write(json.dumps({"text": text, "id": f"{source.name}/{index}"}) + "\n")
        for handle in handles:
            handle.close()
    done.write_text("")


def prepare_mixture_shards(mixture, tokenizer_dir: str | Path, output_dir: str | Path, tasks: int = 2,
                           workers: int = 1):
    """Token shards of the mixture's training split under `output_dir`; returns the mixture naming them."""
    from .config import DataConfig, SourceSpec
    from .executors import ExecutorOptions
    from .prepare import prepare_data

    output_dir = Path(output_dir)
    write_inputs(mixture, output_dir / "input", tasks)
    text_sources = [s for s in mixture.sources if s.weight > 0 and (s.path is not None or s.dataset is not None)]
    config = DataConfig(sources=[SourceSpec(name=s.name, kind="text", path=str(output_dir / "input" / s.name),
                                            glob="*.jsonl", weight=s.weight) for s in text_sources],
                        tokenizer=str(tokenizer_dir), name=f"{mixture.name}-shards")
    from loguru import logger  # datatrove's logger: its per-stage stats would swamp the training job's output

    logger.disable("datatrove")
    try:
        prepare_data(config, output_dir, ExecutorOptions(workers=workers), tasks=tasks)
    finally:
        logger.enable("datatrove")
    tokens = {s.name: str((output_dir / "tokens" / s.name).resolve()) for s in text_sources}
    sources = [replace(s, tokens=tokens.get(s.name, s.tokens)) for s in mixture.sources]
    return type(mixture)(sources=sources, validation_fraction=mixture.validation_fraction, seed=mixture.seed,
                         name=mixture.name, base_dir=mixture.base_dir)
