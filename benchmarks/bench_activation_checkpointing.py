"""Activation checkpointing (paper §2.4): none vs full vs selective, peak memory and step time (CPU or GPU).

Each mode runs in its own fresh process (so peak memory is not inherited): the same model and batch, a few
warm-up steps, then timed forward+backward+AdamW steps. Peak memory: on CUDA `max_memory_allocated`; on CPU the
growth of the process's peak resident set (ru_maxrss) over its value just before the first step, which is
dominated by activations for these sizes. Prints a table with ratios vs "none" (the baseline).

    python benchmarks/bench_activation_checkpointing.py [--hidden 256 --layers 4 --seq-len 512 --batch 8]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(mode: str, hidden: int, layers: int, seq_len: int, batch: int, steps: int, device: str) -> dict:
    """One mode, in this process: peak memory growth (MiB) and median step time (s)."""
    sys.path.insert(0, str(REPO))
    import torch

    from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM
    from training.activation_checkpointing import apply_activation_checkpointing

    torch.manual_seed(0)
    config = LlamaPaperConfig.from_preset("small", hidden_size=hidden, num_hidden_layers=layers,
                                          num_attention_heads=max(1, hidden // 64), vocab_size=4000)
    model = apply_activation_checkpointing(LlamaPaperForCausalLM(config).to(device).train(), mode)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, config.vocab_size, (batch, seq_len), device=device)

    def step():
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # Gradients and optimizer state exist before the baseline is taken (a zero-gradient AdamW step creates them
    # without any forward pass), so the growth measured below is activations and their transients only.
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for _ in range(steps):  # (the first step's time includes warm-up; the median below ignores it for steps >= 3)
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    times.sort()
    return {"mode": mode, "peak_mib": (peak - base) / 2**20, "step_s": times[len(times) // 2]}


def main() -> None:
    """Run every mode in a subprocess and print the comparison table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one mode and print JSON
    args = parser.parse_args()
    sizes = (args.hidden, args.layers, args.seq_len, args.batch, args.steps, args.device)
    if args.one:
        print(json.dumps(measure(args.one, *sizes)))
        return
    results = []
    for mode in ("none", "full", "selective"):
        command = [sys.executable, __file__, "--one", mode, "--hidden", str(args.hidden), "--layers",
                   str(args.layers), "--seq-len", str(args.seq_len), "--batch", str(args.batch), "--steps",
                   str(args.steps), "--device", args.device]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
        print(f"{mode}: {results[-1]}", flush=True)
    base = results[0]
    print(f"\n{platform.machine()} {args.device}; d={args.hidden}, {args.layers} layers, batch {args.batch} x "
          f"{args.seq_len}; activation memory = peak growth during training steps; median step time")
    print("| mode | activation memory MiB | vs none | step s | vs none |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['mode']} | {r['peak_mib']:.0f} | {r['peak_mib'] / base['peak_mib']:.2f}x | {r['step_s']:.3f} | "
              f"{r['step_s'] / base['step_s']:.2f}x |")


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
