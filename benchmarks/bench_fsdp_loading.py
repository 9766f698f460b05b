"""FSDP2 model building per process: every rank builds and initialises the model (baseline) vs rank-0-only
building (`fsdp_cpu_ram_efficient_loading`, the default of training/configs/*-fsdp.yaml), where the other ranks
get `torch.empty` parameters that Accelerate fills from rank 0's broadcast while sharding.

Each case runs `training.pretrain.build_model` in a fresh process (peak memory not inherited) and reports the growth
of its peak resident set (ru_maxrss) over the value just before the build, and the build time. On a host with 8 GPUs
the baseline's figure is paid 8 times over (65B in float32: 260 GB per process).

    python benchmarks/bench_fsdp_loading.py [--preset 1B]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(preset: str, rank: int, efficient: bool) -> dict:
    """Build the preset's model as `rank` would, in this process: peak RSS growth (MiB) and seconds."""
    sys.path.insert(0, str(REPO))
    os.environ["ACCELERATE_USE_FSDP"] = "true"
    os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = str(efficient).lower()
    from training.pretrain import build_model
    from training.run_config import RunConfig

    class PaperVocabulary:  # all build_model reads of a tokenizer: the paper's 32k vocabulary and its special ids
        bos_token_id, eos_token_id = 1, 2

        def __len__(self) -> int:
            return 32000

    tokenizer = PaperVocabulary()
    run = RunConfig.from_dict({"model_preset": preset})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    model = build_model(run, tokenizer, rank=rank)
    seconds = time.perf_counter() - start
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    return {"mib": grown, "seconds": seconds, "parameters": sum(p.numel() for p in model.parameters())}


def main() -> None:
    """Print peak memory and time of building the model on a non-zero rank, baseline vs rank-0 loading."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="1B")
    parser.add_argument("--worker", nargs=2, metavar=("RANK", "EFFICIENT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.preset, int(args.worker[0]), args.worker[1] == "1")))
        return
    cases = [("every rank builds (baseline), rank 1", 1, "0"), ("rank-0 loading, rank 1", 1, "1"),
             ("rank-0 loading, rank 0", 0, "1")]
    rows = []
    for label, rank, efficient in cases:
        out = subprocess.run([sys.executable, __file__, "--preset", args.preset, "--worker", str(rank), efficient],
                             check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        rows.append((label, json.loads(out.stdout.strip().splitlines()[-1])))
    import torch
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; preset {args.preset} "
          f"({rows[0][1]['parameters'] / 1e9:.2f}B parameters, float32)")
    print("| process | peak RSS growth MiB | vs baseline | build s | vs baseline |\n|---|---|---|---|---|")
    base = rows[0][1]
    for label, r in rows:
        print(f"| {label} | {r['mib']:,.0f} | {r['mib'] / base['mib']:.3f}x | {r['seconds']:.2f} "
              f"| {r['seconds'] / base['seconds']:.3f}x |")


if __name__ == "__main__":
    main()
