"""`llama-paper prepare-data`, `tokenize-data`, `train-quality-classifier` and `train-ngram`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _read_texts(paths: list[str]) -> list[str]:
    """Documents from .txt files (blank-line separated) or .jsonl files (`text` field)."""
    import json

    texts = []
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found.")
        if path.suffix in (".jsonl", ".json"):
            texts += [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            texts += [p for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    return texts


def _executor_options(args):
    from .executors import ExecutorOptions
    return ExecutorOptions(kind=args.executor, workers=args.workers, partition=args.slurm_partition,
                           time=args.slurm_time, cpus_per_task=args.slurm_cpus_per_task,
                           env_command=args.slurm_env_command, dry_run=args.dry_run)


def _run(args, filter: bool, tokenize: bool) -> int:
    from .config import load_data_config
    from .prepare import prepare_data

    try:
        config = load_data_config(args.config)
        sources = [s for s in args.sources.split(",") if s] if args.sources else None
        result = prepare_data(config, args.output_dir, _executor_options(args), tasks=args.tasks, sources=sources,
                              filter=filter, tokenize=tokenize and not args.no_tokenize, tokenizer=args.tokenizer)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"llama-paper {args.command_name}: error: {error}", file=sys.stderr)
        return 2
    for script in result["slurm_scripts"]:
        print(f"# sbatch {' '.join(script['args'])}  (job {script['job_id']}, not submitted)\n{script['script']}")
    if args.executor == "local":
        print((Path(args.output_dir) / "report.md").read_text())
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="data config YAML (training/configs/data/*.yaml)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--executor", choices=("local", "slurm", "ray"), default="local")
    parser.add_argument("--tasks", type=int, default=1, help="parallel tasks per stage (input files are sharded)")
    parser.add_argument("--workers", type=int, default=1, help="tasks run at once (local/ray)")
    parser.add_argument("--sources", help="comma-separated source names (default: all)")
    parser.add_argument("--tokenizer", help="SentencePiece tokenizer.model or tokenizer folder (overrides config)")
    parser.add_argument("--slurm-partition")
    parser.add_argument("--slurm-time", default="24:00:00")
    parser.add_argument("--slurm-cpus-per-task", type=int, default=1)
    parser.add_argument("--slurm-env-command", help="e.g. 'source ~/venv/bin/activate' at the top of each job")
    parser.add_argument("--dry-run", action="store_true", help="slurm: print the job scripts, submit nothing")


def register(subparsers) -> None:
    """`prepare-data` and `tokenize-data` (entry point `llama_paper.commands`)."""
    prepare = subparsers.add_parser("prepare-data", help="the paper's §2.1 pipeline per source (datatrove), then "
                                                         "token shards and a Table 1 report")
    _common(prepare)
    prepare.add_argument("--no-tokenize", action="store_true", help="filter only; tokenize later with tokenize-data")
    prepare.set_defaults(func=lambda a: _run(a, filter=True, tokenize=True), command_name="prepare-data")
    tokenize = subparsers.add_parser("tokenize-data", help="token shards (BOS/EOS, document index) from prepared docs")
    _common(tokenize)
    tokenize.set_defaults(func=lambda a: _run(a, filter=False, tokenize=True), command_name="tokenize-data",
                          no_tokenize=False)


def register_models(subparsers) -> None:
    """`train-quality-classifier` and `train-ngram`."""
    classifier = subparsers.add_parser("train-quality-classifier",
                                       help="fastText Wikipedia-reference vs random-page classifier")
    classifier.add_argument("--positive", nargs="+", required=True, help="text of pages cited by Wikipedia")
    classifier.add_argument("--negative", nargs="+", required=True, help="text of random pages")
    classifier.add_argument("--output", required=True, help="model file to write (version its name)")
    classifier.add_argument("--epoch", type=int, default=25)
    classifier.add_argument("--bucket", type=int, default=2_000_000, help="hash buckets of word n-grams (memory)")
    classifier.set_defaults(func=_train_classifier)
    ngram = subparsers.add_parser("train-ngram", help="Kneser-Ney n-gram model (ARPA, for KenLM) over "
                                                      "SentencePiece pieces, from text")
    ngram.add_argument("inputs", nargs="+", help=".txt or .jsonl files")
    ngram.add_argument("--output", required=True, help=".arpa file to write (its tokenizer goes beside it as "
                                                       "<name>.sp.model)")
    ngram.add_argument("--tokenizer", required=True, help="SentencePiece tokenizer.model (or a folder holding one): "
                                                          "the model is trained on, and scores, its pieces")
    ngram.add_argument("--order", type=int, default=3)
    ngram.set_defaults(func=_train_ngram)


def _train_classifier(args) -> int:
    from .models import train_quality_classifier
    path = train_quality_classifier(_read_texts(args.positive), _read_texts(args.negative), args.output, args.epoch,
                                    bucket=args.bucket)
    print(f"Wrote {path}")
    return 0


def _train_ngram(args) -> int:
    from .filters import ngram_tokenizer_path
    from .models import train_ngram

    try:
        path = train_ngram(_read_texts(args.inputs), args.output, args.tokenizer, args.order)
    except (ValueError, FileNotFoundError) as error:
        print(f"llama-paper train-ngram: error: {error}", file=sys.stderr)
        return 2
    print(f"Wrote {path} and its tokenizer, {ngram_tokenizer_path(path)}")
    return 0
