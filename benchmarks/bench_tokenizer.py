"""Benchmark: batch encode of 10 MB of text, LlamaPaperTokenizerFast vs raw SentencePiece batch `encode`.

Run: python benchmarks/bench_tokenizer.py [--megabytes 10] [--repeats 3] [--threads 2]
Text: the demo corpus (training/corpus/*.txt) cut into ~2 KB documents and repeated to the requested size.
Both encoders get the same list, use the same number of threads, and must return identical ids (checked).
Prints the median time of each and the ratio sentencepiece_time / fast_time (> 1: the fast tokenizer is faster).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "tests" / "fixtures" / "llama-tokenizer" / "tokenizer.model"


def corpus(megabytes: float) -> list[str]:
    """~2 KB documents of demo-corpus text totalling `megabytes` MB (UTF-8)."""
    text = "".join(p.read_text(encoding="utf-8-sig") for p in sorted((REPO / "training" / "corpus").glob("*.txt")))
    docs, size, target = [], 0, int(megabytes * 1e6)
    while size < target:
        for start in range(0, len(text), 2000):
            doc = text[start : start + 2000]
            docs.append(doc)
            size += len(doc.encode("utf-8"))
            if size >= target:
                break
    return docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # read by tokenizers when its thread pool starts

    import sentencepiece as spm
    import tokenizers
    import transformers

    sys.path.insert(0, str(REPO))
    from modeling_llama import LlamaPaperTokenizerFast

    docs = corpus(args.megabytes)
    sp = spm.SentencePieceProcessor(model_file=str(MODEL))
    fast = LlamaPaperTokenizerFast(vocab_file=str(MODEL), add_bos_token=False)
    fast_times, sp_times, backend_times = [], [], []
    for _ in range(args.repeats):  # alternate, so machine noise hits both alike
        start = time.perf_counter()
        ours = fast(docs).input_ids
        fast_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        reference = sp.encode(docs, num_threads=args.threads)
        sp_times.append(time.perf_counter() - start)
        start = time.perf_counter()  # the tokenizers backend alone, without offsets or BatchEncoding
        backend = [e.ids for e in fast.backend_tokenizer.encode_batch_fast(docs)]
        backend_times.append(time.perf_counter() - start)
    if ours != reference or backend != reference:
        sys.exit("MISMATCH: the fast tokenizer's ids differ from sentencepiece's")
    size = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    fast_s, sp_s = statistics.median(fast_times), statistics.median(sp_times)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus; tokenizers {tokenizers.__version__}, "
        f"sentencepiece {spm.__version__}, transformers {transformers.__version__}"
    )
    print(
        f"{size:.1f} MB, {len(docs)} docs, {sum(map(len, ours)):,} tokens, {args.threads} threads, "
        f"median of {args.repeats}"
    )
    print(f"fast tokenizer (batch __call__): {fast_s:.2f} s = {size / fast_s:.1f} MB/s")
    backend_s = statistics.median(backend_times)
    print(f"tokenizers backend encode_batch_fast: {backend_s:.2f} s = {size / backend_s:.1f} MB/s")
    print(f"sentencepiece batch encode:      {sp_s:.2f} s = {size / sp_s:.1f} MB/s")
    print(f"ratio sentencepiece_time / fast_time: {sp_s / fast_s:.2f}x")


if __name__ == "__main__":
    main()
