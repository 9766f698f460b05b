"""`llama-paper eval`: evaluate a causal LM on the paper's benchmarks under the harness or the paper protocol."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from .paper_results import comparison_table


def register(subparsers: Any) -> None:
    """Add the `eval` sub-command."""
    p = subparsers.add_parser("eval", help="Evaluate a model on the paper's benchmarks (lm-eval or paper protocol).",
                              description=__doc__)
    p.add_argument("--model", required=True, help="model folder or Hub id (AutoModelForCausalLM + AutoTokenizer)")
    p.add_argument("--tasks", required=True, help="comma-separated task names, or the groups 'paper', 'commonsense'")
    p.add_argument("--protocol", choices=("harness", "paper"), default="harness",
                   help="harness: lm-eval 0.4.13's task definitions exactly; paper: the LLaMA paper's rules")
    p.add_argument("--num-fewshot", type=int, default=None, help="shots (default: the task's own)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N documents of each task")
    p.add_argument("--data-dir", default=None, help="folder of <task file>.jsonl in the Hub schema (offline)")
    p.add_argument("--batch-size", default="auto", help="'auto' or an integer (rows per forward pass)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16", "auto"))
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--seed", type=int, default=1234, help="few-shot sampling seed (lm-eval's default 1234) and "
                                                        "generation sampling seed")
    p.add_argument("--num-samples", type=int, default=None, help="samples per problem for maj1@k / pass@k")
    p.add_argument("--allow-code-execution", action="store_true",
                   help="run generated programs (humaneval, mbpp) in the sandbox; also HF_ALLOW_CODE_EVAL=1")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the decode step of generation tasks (default: once a run has decoded "
                        "2048 steps; compiling takes tens of seconds on a CPU)")
    p.add_argument("--output", required=True, help="results.json to write")
    p.add_argument("--log-samples", default=None, help="samples.jsonl to write (one line per document)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def _write_atomic(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> int:
    """Run the evaluation and write results (and samples); returns the exit code."""
    import torch

    from .model_adapter import CausalLMAdapter
    from .runner import evaluate
    from .tasks import resolve_tasks

    try:
        tasks = resolve_tasks(args.tasks)
    except ValueError as err:
        print(f"llama-paper eval: {err}", file=sys.stderr)
        return 2
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        print(f"llama-paper eval: --data-dir {args.data_dir} is not a folder.", file=sys.stderr)
        return 2
    batch = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    torch.manual_seed(args.seed)
    try:
        adapter = CausalLMAdapter.from_pretrained(args.model, dtype=args.dtype, device=args.device, batch_size=batch,
                                                  progress=not args.no_progress, seed=args.seed,
                                                  compile_generation=args.compile)
        report, samples = evaluate(adapter, tasks, args.protocol, num_fewshot=args.num_fewshot, limit=args.limit,
                                   data_dir=args.data_dir, fewshot_seed=args.seed,
                                   allow_code_execution=args.allow_code_execution, num_samples=args.num_samples)
    except (ValueError, PermissionError, OSError) as err:
        print(f"llama-paper eval: {err}", file=sys.stderr)
        return 2
    report["config"].update(batch_size=args.batch_size, dtype=args.dtype, seed=args.seed, tasks=tasks)
    _write_atomic(args.output, json.dumps(report, indent=2, default=str))
    if args.log_samples:
        _write_atomic(args.log_samples, "".join(json.dumps(s, default=str) + "\n" for s in samples))
    print(comparison_table(report["results"]))
    return 0
