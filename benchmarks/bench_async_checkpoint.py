"""How long a checkpoint blocks the training loop: asynchronous DCP saves (`async_checkpoint: true`) vs the
synchronous DCP save of the same state (the baseline, measured in the same process on the same files).

The loop trains a model of the chosen preset with the paper's AdamW; every `--steps-between` optimizer steps it
saves a checkpoint (model + optimizer + RNG + trainer state) through training.distributed_checkpoint. "Blocked" is
the time the loop waits because of the save: for a synchronous save the whole write; for an asynchronous one the
save call, the wait of the next optimizer step for the copy into CPU memory (which overlaps that step's forward and
backward), and any wait for the previous save still in flight. The
background writer competes with training for the same cores here (on a GPU host the training runs on the GPU).

    python benchmarks/bench_async_checkpoint.py --preset 1B [--layers N] [--saves 3] [--steps-between 2]

`--layers` truncates the preset's stack (same layer shapes) where the host lacks the memory for the whole model:
an asynchronous save holds a second copy of the model and optimizer state (12 bytes per parameter) while writing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build(preset: str, layers: int | None):
    """A LlamaPaperForCausalLM of `preset` (optionally `layers` deep) and its AdamW with populated moments."""
    from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM
    from training.optimizer import build_optimizer

    overrides = {"num_hidden_layers": layers} if layers else {}
    config = LlamaPaperConfig.from_preset(preset, vocab_size=32000, **overrides)
    torch.manual_seed(0)
    model = LlamaPaperForCausalLM(config)
    return model, build_optimizer(model, 3e-4)


def train_step(model, optimizer, seq_len: int, checkpointer=None) -> float:
    """One optimizer step, as training.pretrain runs it; returns the seconds spent waiting for a save's staging."""
    batch = torch.randint(0, model.config.vocab_size, (1, seq_len))
    model(input_ids=batch, labels=batch).loss.backward()
    start = time.perf_counter()
    if checkpointer is not None:
        checkpointer.wait_for_staging()  # an async save may still be copying the state the step changes
    waited = time.perf_counter() - start
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return waited


def measure(async_save: bool, model, optimizer, saves: int, steps_between: int, seq_len: int, root: Path) -> dict:
    """Seconds the loop was blocked by each save; the final wait (end of run) separately."""
    from training.accelerator import build_accelerator
    from training.distributed_checkpoint import DistributedCheckpointer

    accelerator = build_accelerator()
    checkpointer = DistributedCheckpointer(accelerator, model, optimizer, async_save=async_save)
    output = root / ("async" if async_save else "sync")
    blocked, waited, steps = [], [], []
    for number in range(1, saves + 1):
        for index in range(steps_between):
            start = time.perf_counter()
            staging_wait = train_step(model, optimizer, seq_len, checkpointer)
            steps.append(time.perf_counter() - start)
            if number > 1 and index == 0:  # the previous save's copy, overlapped with this step's forward/backward
                blocked[-1] += staging_wait
        start = time.perf_counter()
        checkpointer.wait()  # the previous save still in flight, if the steps since did not cover its write
        waited.append(time.perf_counter() - start)
        checkpointer.save(output, number, {"step": number}, keep=1)
        blocked.append(time.perf_counter() - start)
    blocked[-1] += train_step(model, optimizer, seq_len, checkpointer)  # the last save's copy, likewise
    start = time.perf_counter()
    checkpointer.wait()
    final_wait = time.perf_counter() - start
    size = sum(f.stat().st_size for f in output.rglob("*") if f.is_file()) / 2**30
    shutil.rmtree(output)
    return {"blocked_s": blocked, "of_which_waiting_for_previous_s": waited, "final_wait_s": final_wait,
            "step_s": statistics.median(steps),
            "checkpoint_gib": round(size, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="1B")
    parser.add_argument("--layers", type=int, help="truncate the preset to this many decoder layers")
    parser.add_argument("--saves", type=int, default=3)
    parser.add_argument("--steps-between", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--dir", help="where to write the checkpoints (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    model, optimizer = build(args.preset, args.layers)
    train_step(model, optimizer, args.seq_len)  # Adam's moments exist from here on: a realistic checkpoint
    parameters = sum(p.numel() for p in model.parameters())
    root = Path(args.dir or tempfile.mkdtemp(prefix="bench-async-ckpt-"))
    results = {}
    for async_save in (False, True):  # the synchronous baseline first, then the same saves in the background
        results["async" if async_save else "sync"] = measure(async_save, model, optimizer, args.saves,
                                                             args.steps_between, args.seq_len, root)
    # The first save of each mode includes one-off planning; the steady state is the median.
    sync_s, async_s = (statistics.median(results[m]["blocked_s"]) for m in ("sync", "async"))
    staging_s = statistics.median(b - w for b, w in zip(results["async"]["blocked_s"],
                                                         results["async"]["of_which_waiting_for_previous_s"]))
    print(json.dumps({"preset": args.preset, "layers": args.layers or "all", "parameters": parameters,
                      "results": results, "torch": torch.__version__, "platform": platform.platform()}, indent=1))
    print(f"\n{args.preset} ({parameters / 1e6:.0f}M parameters, {results['sync']['checkpoint_gib']} GiB per "
          f"checkpoint): loop blocked per checkpoint, median of {args.saves}: synchronous {sync_s:.2f} s, "
          f"asynchronous {async_s:.2f} s -> {async_s / sync_s:.1%} of the synchronous time "
          f"(training step {results['sync']['step_s']:.2f} s sync-run, {results['async']['step_s']:.2f} s "
          "while writing in the background); without waiting for a previous save still in flight (checkpoints "
          f"further apart than one write): {staging_s:.2f} s -> {staging_s / sync_s:.1%}")


if __name__ == "__main__":
    main()
