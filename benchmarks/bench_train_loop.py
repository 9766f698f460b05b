"""Training throughput of our loop (`training.pretrain`) vs `transformers.Trainer`, same model, data and batch.

On CPU by default (the issue's goal); on a CUDA machine both loops run on the GPU (`--mixed-precision bf16` there).

Both train the same freshly initialised LlamaPaperForCausalLM (same seed) on the same packed 128-token rows of the
demo corpus, batch 16, fp32, AdamW(0.9, 0.95), wd 0.1, clip 1.0, warm-up then cosine, one process:
- ours: `training.pretrain.pretrain(run)` (Accelerate, packed stream, no padding or attention mask);
- baseline: `Trainer` with the usual causal-LM collator (`DataCollatorForLanguageModeling(mlm=False)`) over the
  same rows pre-materialised as a dataset.
Throughput is measured at steady state: tokens/s over steps (--skip, --steps], start-up, evaluation and saving
excluded. Prints both and the ratio ours / Trainer (> 1: we are faster): the median over --repeats of the ratio
within each repeat (the two runs of a repeat are back to back, so they share the machine's load; on a shared
machine this is far steadier than comparing medians of throughputs); the order alternates between repeats.

    python benchmarks/bench_train_loop.py [--preset tiny] [--steps 60] [--skip 10] [--repeats 5] [--threads 1]
                                          [--compile] [--mixed-precision bf16]

--compile compiles the model in both loops (ours: `compile: true`; Trainer: `torch_compile=True`); compilation
happens in the first steps, which --skip excludes.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402

import modeling_llama  # noqa: E402,F401
from training.data import PackedStream, demo_mixture_path, load_mixture  # noqa: E402
from training.pretrain import build_model, pretrain  # noqa: E402
from training.run_config import RunConfig  # noqa: E402
from training.tokenizer import train_tokenizer  # noqa: E402

SEQ_LEN, BATCH = 128, 16


def run_ours(run: RunConfig, skip: int) -> float:
    """Steady-state tokens/s of our loop over the logged windows after step `skip`."""
    pretrain(run)
    records = [json.loads(x) for x in (Path(run.output_dir) / "metrics.jsonl").read_text().splitlines()]
    steady = [r for r in records if r["step"] > skip]
    seconds = sum(BATCH * SEQ_LEN * run.log_steps / r["tokens_per_s"] for r in steady)
    return BATCH * SEQ_LEN * run.log_steps * len(steady) / seconds


def run_trainer(run: RunConfig, tokenizer, skip: int) -> float:
    """Steady-state tokens/s of transformers.Trainer over steps (skip, max_steps]."""
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments

    stream = PackedStream(load_mixture(demo_mixture_path()), tokenizer, seq_len=SEQ_LEN, seed=run.seed)
    rows = stream.next_batch(BATCH * run.max_steps).tolist()
    dataset = Dataset.from_dict({"input_ids": rows})
    times = {}

    cuda = torch.cuda.is_available()

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if cuda:  # the step's kernels may still be queued; ours syncs on the loss every step
                torch.cuda.synchronize()
            times[state.global_step] = time.perf_counter()

    warmup = run.resolved_warmup_steps()
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(), max_steps=run.max_steps, per_device_train_batch_size=BATCH,
        learning_rate=run.learning_rate, weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.95, max_grad_norm=1.0,
        lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.1}, warmup_steps=warmup,
        logging_steps=run.log_steps, save_strategy="no", report_to="none", use_cpu=not cuda,
        dataloader_num_workers=0, seed=run.seed, disable_tqdm=True, torch_compile=run.compile,
        bf16=run.mixed_precision == "bf16")
    tokenizer.pad_token = tokenizer.eos_token
    trainer = Trainer(model=build_model(run, tokenizer), args=args, train_dataset=dataset,
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False), processing_class=tokenizer,
                      callbacks=[Clock()])
    trainer.train()
    return BATCH * SEQ_LEN * (run.max_steps - skip) / (times[run.max_steps] - times[skip])


def main() -> None:
    """Run both loops --repeats times, alternating, and print the median throughputs and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", help="model preset (LlamaPaperConfig)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--skip", type=int, default=10, help="steps excluded from the timing (warm-up)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscribing shared cores)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model in both loops")
    parser.add_argument("--mixed-precision", choices=("no", "bf16"), default="no",
                        help="bf16 autocast in both loops (for a GPU; both run on CUDA when there is one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoTokenizer

    work = Path(tempfile.mkdtemp(prefix="bench-train-loop-"))
    folder = train_tokenizer(load_mixture(demo_mixture_path()).iter_texts(), vocab_size=512,
                             output_dir=work / "tokenizer", progress=False)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ours, theirs = [], []
    for repeat in range(args.repeats):
        run = RunConfig(model_preset=args.preset, tokenizer=str(folder), seq_len=SEQ_LEN, micro_batch_size=BATCH,
                        max_steps=args.steps, log_steps=args.skip, tensorboard=False, eval_max_batches=1,
                        sample_tokens=0, compile=args.compile,
                        mixed_precision=args.mixed_precision, output_dir=str(work / f"ours-{repeat}"))
        loops = [(ours, lambda: run_ours(run, args.skip)), (theirs, lambda: run_trainer(run, tokenizer, args.skip))]
        # Alternate which loop goes first: the first run of a process pays warm-up (allocator, caches) that the
        # second does not.
        for results, measure in loops if repeat % 2 == 0 else loops[::-1]:
            results.append(measure())
        print(f"repeat {repeat}: ours {ours[-1]:,.0f} tokens/s, Trainer {theirs[-1]:,.0f} tokens/s, "
              f"ratio {ours[-1] / theirs[-1]:.2f}", flush=True)
    a, b = statistics.median(ours), statistics.median(theirs)
    ratio = statistics.median(x / y for x, y in zip(ours, theirs, strict=True))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"\nmachine: {platform.machine()}, {device}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"mixed precision {args.mixed_precision}")
    print(f"model preset {args.preset}, batch {BATCH} x {SEQ_LEN} tokens, steps {args.skip}..{args.steps}, "
          f"compiled: {args.compile}")
    print(f"| loop | tokens/s (median of {args.repeats}) | ratio vs Trainer (median of per-repeat ratios) |")
    print("|---|---|---|")
    print(f"| transformers.Trainer | {b:,.0f} | 1.00x |\n| training.pretrain | {a:,.0f} | **{ratio:.2f}x** |")


if __name__ == "__main__":
    main()
