"""`llama-paper eval`: evaluate a causal LM on the paper's benchmarks under the harness or the paper protocol.

Also `python -m evaluation` with the same flags, which is what `accelerate launch` / `torchrun` start once per process
for data-parallel (`--num-processes N` launches that for you) or tensor-parallel evaluation.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from typing import Any

from .paper_results import PAPER_RESULTS, SIZES, comparison_table, primary_metric


def register(subparsers: Any) -> None:
    """Add the `eval` sub-command."""
    p = subparsers.add_parser("eval", help="Evaluate a model on the paper's benchmarks (lm-eval or paper protocol).",
                              description=__doc__)
    add_arguments(p)


def build_parser(prog: str = "python -m evaluation") -> argparse.ArgumentParser:
    """The `eval` flags as a stand-alone parser (for `python -m evaluation` under a launcher)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `llama-paper eval`."""
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
                   help="torch.compile the decode step of generation tasks (default: greedy tasks once a run has "
                        "decoded 2048 steps, sampled ones never; compiling takes tens of seconds on a CPU)")
    p.add_argument("--output", required=True, help="results.json to write")
    p.add_argument("--log-samples", default=None, help="samples.jsonl to write (one line per document)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--update-card", metavar="DIR", default=None,
                   help="also merge the results into DIR's model card (README.md metadata and body) in place")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="request cache folder (SQLite): a rerun of a killed evaluation computes only what is missing; "
                        "entries are scoped to this model's weights, config, dtype and tokenizer and the protocol")
    p.add_argument("--num-processes", type=int, default=1,
                   help="data-parallel processes on this machine (launches `accelerate launch -m evaluation`)")
    p.add_argument("--device-map", default=None,
                   help="spread the model's layers over devices: auto, balanced, sequential (disk offload included)")
    p.add_argument("--max-memory", default=None, help="with --device-map: per-device limits, e.g. '0=20GiB,cpu=60GiB'")
    p.add_argument("--offload-folder", default=None, help="with --device-map: where layers offloaded to disk go")
    p.add_argument("--tensor-parallel", type=int, default=1,
                   help="shard every layer over N processes (transformers' DistributedConfig); under torchrun with "
                        "N processes, or launched by llama-paper eval itself")
    p.set_defaults(func=run)


def parse_max_memory(text: str | None) -> dict[int | str, str] | None:
    """'0=20GiB,cpu=60GiB' -> {0: '20GiB', 'cpu': '60GiB'} (as from_pretrained's max_memory)."""
    if not text:
        return None
    out: dict[int | str, str] = {}
    for item in text.split(","):
        device, sep, size = item.partition("=")
        if not sep or not device.strip() or not size.strip():
            raise ValueError(f"--max-memory {text!r}: expected DEVICE=SIZE[,DEVICE=SIZE...], e.g. '0=20GiB,cpu=60GiB'.")
        device = device.strip()
        out[int(device) if device.isdigit() else device] = size.strip()
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _argv(args: argparse.Namespace, drop: tuple[str, ...]) -> list[str]:
    """The command-line flags that reproduce `args` (except `drop`)."""
    argv = []
    for action in build_parser()._actions:
        if not action.option_strings or action.dest in drop or action.dest == "help":
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        flag = action.option_strings[0]
        if isinstance(action, argparse.BooleanOptionalAction):  # --compile / --no-compile
            argv += [flag if value else action.option_strings[1]]
        else:
            argv += [flag] if isinstance(action, argparse._StoreTrueAction) else [flag, str(value)]
    return argv


def launch(args: argparse.Namespace, processes: int) -> int:
    """Run this evaluation as `processes` processes on this machine with `accelerate launch`; its exit code."""
    # --multi_gpu selects the torchrun launcher, which also starts N processes on a CPU-only machine (gloo).
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
           "--num_machines", "1", "--main_process_port", str(_free_port()), "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "evaluation", *_argv(args, ("num_processes", "func"))]
    return subprocess.run(cmd, check=False).returncode


def _write_atomic(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> int:
    """Run the evaluation and write results (and samples); returns the exit code."""
    processes = max(args.num_processes, args.tensor_parallel)
    if processes > 1 and "WORLD_SIZE" not in os.environ:
        return launch(args, processes)
    import torch

    from .distributed import init_world
    from .tasks import resolve_tasks

    try:
        tasks = resolve_tasks(args.tasks)
        if args.data_dir is not None and not os.path.isdir(args.data_dir):
            raise ValueError(f"--data-dir {args.data_dir} is not a folder.")
        if args.update_card is not None and not os.path.isfile(os.path.join(args.update_card, "config.json")):
            raise ValueError(f"--update-card {args.update_card} is not a saved model folder (no config.json).")
        max_memory = parse_max_memory(args.max_memory)
        world = init_world(args.tensor_parallel)
        if args.tensor_parallel > 1 and world.size != args.tensor_parallel:
            raise ValueError(f"--tensor-parallel {args.tensor_parallel} needs exactly {args.tensor_parallel} "
                             f"processes (got {world.size}); data parallelism over tensor-parallel groups is not "
                             "supported.")
    except ValueError as err:
        print(f"llama-paper eval: {err}", file=sys.stderr)
        return 2
    batch = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    device = args.device
    if device is None and world.size > 1 and torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    torch.manual_seed(args.seed)
    try:
        return _evaluate_and_write(args, tasks, world, batch, device, max_memory)
    finally:
        if world.size > 1:
            torch.distributed.destroy_process_group()


def _evaluate_and_write(args: argparse.Namespace, tasks: list[str], world: Any, batch: int | str, device: str | None,
                        max_memory: dict | None) -> int:
    from .model_adapter import CausalLMAdapter
    from .runner import evaluate

    try:
        adapter = CausalLMAdapter.from_pretrained(args.model, dtype=args.dtype, device=device, batch_size=batch,
                                                  progress=not args.no_progress, device_map=args.device_map,
                                                  max_memory=max_memory, offload_folder=args.offload_folder,
                                                  tensor_parallel=args.tensor_parallel, seed=args.seed,
                                                  compile_generation=args.compile)
        adapter.world = world
        if args.cache:
            adapter.enable_cache(args.cache, args.protocol)
        report, samples = evaluate(adapter, tasks, args.protocol, num_fewshot=args.num_fewshot, limit=args.limit,
                                   data_dir=args.data_dir, fewshot_seed=args.seed,
                                   allow_code_execution=args.allow_code_execution, num_samples=args.num_samples)
    except (ValueError, PermissionError, OSError) as err:
        print(f"llama-paper eval: {err}", file=sys.stderr)
        return 2
    if not world.is_main:  # rank 0 holds the same gathered results and writes them
        return 0
    annotate_with_paper(report)
    report["config"].update(batch_size=args.batch_size, dtype=args.dtype, seed=args.seed, tasks=tasks,
                            num_processes=world.size, tensor_parallel=args.tensor_parallel,
                            device_map=args.device_map, max_memory=args.max_memory, placement=adapter.placement())
    throughput = [r["throughput"] for r in report["results"].values()]
    cached, total = sum(t["cached_requests"] for t in throughput), sum(t["requests"] for t in throughput)
    if args.cache:
        report["cache"] = {"dir": args.cache, "cached_requests": cached, "requests": total}
    _write_atomic(args.output, json.dumps(report, indent=2, default=str))
    if args.log_samples:
        _write_atomic(args.log_samples, "".join(json.dumps(s, default=str) + "\n" for s in samples))
    print(comparison_table(report["results"]))
    for name, result in report["results"].items():
        t = result["throughput"]
        print(f"{name}: {t['computed_requests']} requests computed at {t['requests_per_s']:.1f} req/s, "
              f"{t['tokens_per_s']:.0f} tok/s ({world.size} process{'es' if world.size > 1 else ''})")
    if args.cache:
        print(f"llama-paper eval: {cached} of {total} requests read from the cache {args.cache}")
    if args.update_card:
        return update_card(args.update_card, args.output)
    return 0


def annotate_with_paper(report: dict[str, Any]) -> None:
    """Record in each task result its primary metric and the paper's numbers, so that results.json alone is enough
    to put ours next to the paper's (model cards read it as a data file)."""
    for task, res in report["results"].items():
        res["primary_metric"] = primary_metric(res)
        paper = PAPER_RESULTS.get(task)
        if paper:
            res["paper"] = {"metric": paper["metric"], "shots": paper["shots"],
                            "scores": list(paper["scores"]), "sizes": list(SIZES)}


def update_card(folder: str, results_path: str) -> int:
    """Merge a results.json into a model folder's card; one clear line and exit code 2 on failure."""
    from publishing.card import write_card

    try:
        card = write_card(folder, results=[results_path])
    except (OSError, ValueError) as err:
        print(f"llama-paper eval --update-card: {err}", file=sys.stderr)
        return 2
    print(f"Updated the model card {card}.")
    return 0
