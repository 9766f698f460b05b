"""Data-parallel evaluation: 2 processes vs 1 process on the same machine, same documents, same model.

Runs `python -m evaluation` (one process, `--threads` torch threads) and `python -m evaluation --num-processes 2`
(accelerate launch, one thread per process), alternating, on the commonsense tasks with a random "small"
LlamaPaperForCausalLM and the real LLaMA tokenizer. Prints both wall times (whole command: process start, model
load, data, scoring, gather, writing), the time spent in the model calls (results.json `throughput.seconds`,
summed over tasks), the ratio (1 process / 2 processes) and whether samples.jsonl is identical.

    python benchmarks/bench_eval_scale.py --tasks commonsense --limit 50 --threads 1 --repeats 2   # ~2 min idle

One thread per process on both sides: 1 process x 1 thread vs 2 processes x 1 thread is the data-parallel question
(each worker owns a core, as each owns a GPU on a GPU box); a single process on 2 threads (`--threads 2`) is another
comparison (intra-op parallelism) and on a shared CPU its OpenMP threads spin against the other jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_eval import DATA, ROOT, save_model


def run(model: Path, out: Path, args: argparse.Namespace, processes: int) -> tuple[float, float, float]:
    """(wall seconds of the whole command, seconds in model calls, CPU seconds of all its processes) for one run."""
    threads = args.threads if processes == 1 else 1
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "evaluation", "--model", str(model), "--tasks", args.tasks, "--limit",
           str(args.limit), "--data-dir", str(DATA), "--batch-size", str(args.batch_size), "--no-progress",
           "--num-processes", str(processes), "--output", str(out / "results.json"),
           "--log-samples", str(out / "samples.jsonl")]
    t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True)
    wall, c1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
    report = json.loads((out / "results.json").read_text())
    return wall, sum(r["throughput"]["seconds"] for r in report["results"].values()), cpu


def main() -> None:
    """Time both and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="commonsense")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the single process")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each; the fastest counts")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-eval-scale-"))
    try:
        save_model(work / "model", args.preset)
        best = {1: (float("inf"),) * 3, 2: (float("inf"),) * 3}
        for _ in range(args.repeats):
            for n in (1, 2):
                (work / f"p{n}").mkdir(exist_ok=True)
                wall, model_s, cpu = run(work / "model", work / f"p{n}", args, n)
                print(f"  {n} process{'es' if n > 1 else ''}: whole command {wall:.1f} s, model calls {model_s:.1f} s"
                      f", CPU of all processes {cpu:.1f} s (load average {os.getloadavg()[0]:.1f})", flush=True)
                best[n] = (min(best[n][0], wall), min(best[n][1], model_s), min(best[n][2], cpu))
        same = (work / "p1" / "samples.jsonl").read_bytes() == (work / "p2" / "samples.jsonl").read_bytes()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"machine: {os.cpu_count()} CPU cores (shared); {os.getloadavg()[0]:.1f} load average at the end")
    print(f"model: random LlamaPaperForCausalLM preset {args.preset!r}; tasks {args.tasks}; limit {args.limit}; "
          f"batch size {args.batch_size}")
    (w1, m1, c1), (w2, m2, c2) = best[1], best[2]
    print(f"whole command : 1 process ({args.threads} threads) {w1:6.1f} s   2 processes (1 thread each) {w2:6.1f} s"
          f"   ratio {w1 / w2:.2f}x")
    print(f"model calls   : 1 process {m1:6.1f} s   2 processes {m2:6.1f} s   ratio {m1 / m2:.2f}x")
    print(f"CPU seconds   : 1 process {c1:6.1f} s   2 processes {c2:6.1f} s (launcher + 2 workers, each importing "
          f"torch and loading the model): on 2 idle cores the whole command can gain at most {2 * c1 / c2:.2f}x")
    print(f"samples.jsonl identical: {same}")


if __name__ == "__main__":
    main()
