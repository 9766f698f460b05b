"""Tokenization + packing throughput of `training.data.PackedStream` vs the `transformers` run_clm.py recipe.

Both turn the cleaned demo corpus (tiny Shakespeare + Alice, ~1.26 MB of text) into 256-token sequences with the
LLaMA tokenizer (`LlamaPaperTokenizerFast`, 32k pieces), same documents, BOS/EOS around each:
- ours: `PackedStream(demo mixture).next_batch(...)` until one epoch's worth of tokens is out (reading, cleaning,
  batched tokenization, mixture sampling and packing all inside the timing);
- baseline: `datasets.Dataset.from_dict` + `map(tokenize, batched=True)` + `map(group_texts, batched=True)`, the
  recipe of transformers' examples/pytorch/language-modeling/run_clm.py (in memory, no cache files).
Prints tokens/s of each and the ratio baseline_time / our_time (> 1: we are faster); median of --repeats runs,
alternating the two. For `num_proc=2` also the rate after the first batch (worker start-up excluded).

    python benchmarks/bench_data.py [--repeats 3] [--seq-len 256]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402

from training.data import PackedStream, demo_mixture_path, load_mixture  # noqa: E402

TOKENIZER = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "llama-tokenizer" / "tokenizer.model"


def run_ours(tokenizer, sequences: int, seq_len: int, num_proc: int) -> tuple[float, float]:
    """Seconds to produce `sequences` rows from a fresh PackedStream: in all, and after the first batch of 64."""
    start = time.perf_counter()
    stream = PackedStream(load_mixture(demo_mixture_path()), tokenizer, seq_len=seq_len, num_proc=num_proc)
    stream.next_batch(64)  # with num_proc > 1 this also starts the worker processes
    first = time.perf_counter()
    for _ in range(sequences // 64 - 1):
        stream.next_batch(64)
    stream.close()
    end = time.perf_counter()
    return end - start, end - first


def run_baseline(tokenizer, documents: list[str], seq_len: int) -> tuple[float, int]:
    """Seconds (and rows) for run_clm.py's tokenize + group_texts over the same documents."""
    import datasets

    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    start = time.perf_counter()
    dataset = datasets.Dataset.from_dict({"text": documents})

    def tokenize(batch):
        ids = tokenizer(batch["text"], add_special_tokens=False, verbose=False)["input_ids"]
        return {"input_ids": [[bos, *x, eos] for x in ids]}

    def group_texts(batch):
        flat = [t for ids in batch["input_ids"] for t in ids]
        usable = len(flat) // seq_len * seq_len
        return {"input_ids": [flat[i: i + seq_len] for i in range(0, usable, seq_len)]}

    dataset = dataset.map(tokenize, batched=True, remove_columns=["text"], keep_in_memory=True)
    dataset = dataset.map(group_texts, batched=True, keep_in_memory=True)
    rows = torch.tensor(dataset["input_ids"])
    return time.perf_counter() - start, len(rows)


def main() -> None:
    """Measure and print the table row."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seq-len", type=int, default=256)
    args = parser.parse_args()
    import datasets  # here, not at the top: spawned tokenizer workers re-import this file

    from modeling_llama import LlamaPaperTokenizerFast

    datasets.disable_caching()
    datasets.disable_progress_bars()
    tokenizer = LlamaPaperTokenizerFast(vocab_file=str(TOKENIZER))
    mix = load_mixture(demo_mixture_path())
    documents = [d for s in mix.sources for d in mix.reader(s.name).iter_documents("train", 0, 0, mix.seed)]
    _, rows = run_baseline(tokenizer, documents, args.seq_len)  # warm-up; also fixes the amount of work
    sequences = rows // 64 * 64
    ours, base, ours_mp = [], [], []
    for _ in range(args.repeats):
        ours.append(run_ours(tokenizer, sequences, args.seq_len, num_proc=1))
        base.append(run_baseline(tokenizer, documents, args.seq_len)[0])
        ours_mp.append(run_ours(tokenizer, sequences, args.seq_len, num_proc=2))
    tokens = sequences * args.seq_len
    b = statistics.median(base)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; python "
          f"{platform.python_version()}, torch {torch.__version__}, datasets {datasets.__version__}")
    print(f"{tokens:,} tokens in {sequences} x {args.seq_len} rows (one epoch of the demo corpus)")
    print(f"run_clm.py recipe (datasets map + group_texts): {b:.2f} s  {tokens / b:,.0f} tokens/s")
    for label, runs in (("num_proc=1", ours), ("num_proc=2", ours_mp)):
        total = statistics.median(r[0] for r in runs)
        steady = statistics.median(r[1] for r in runs)
        steady_rate = tokens * (1 - 64 / sequences) / steady
        print(f"PackedStream, {label}: {total:.2f} s  {tokens / total:,.0f} tokens/s  ratio {b / total:.2f}x; "
              f"after the first batch {steady_rate:,.0f} tokens/s")

if __name__ == "__main__":
    main()
