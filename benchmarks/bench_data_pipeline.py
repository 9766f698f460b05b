"""The data pipeline's speed (issue #15), each figure against a baseline measured in this process:

1. tokenization: `prepare-data`'s tokenize stage (datatrove LocalPipelineExecutor, 2 tasks on 2 workers, JSONL
   in, shards out) vs raw SentencePiece `encode(texts, num_threads=2)` on the same documents (ids checked equal);
2. the loader: tokens/s one rank of 8 gets from `TokenShardStream` (seq_len 2048), as a multiple of the ~75k tokens/s
   the `1B` preset consumes on one H100 (the issue's yardstick), next to `PackedStream` (tokenizing on the fly, every
   rank drawing the whole global batch, as before);
3. filtering: documents/s per core of the CommonCrawl pipeline (line dedup, LID, n-gram, wikiref) on the shipped
   sample replicated, next to the same datatrove blocks alone (line dedup + datatrove's LanguageFilter).

    python benchmarks/bench_data_pipeline.py [--copies 400]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
REPO = Path(__file__).resolve().parents[1]
TOKENIZER = REPO / "tests" / "fixtures" / "llama-tokenizer" / "tokenizer.model"
SAMPLE = REPO / "tests" / "fixtures" / "data-pipeline"
H100_1B_TOKENS_PER_S = 75_000


def demo_texts(copies: int) -> list[str]:
    from training.data import demo_mixture_path, load_mixture
    mixture = load_mixture(demo_mixture_path())
    texts = [t for s in mixture.sources for t in mixture.reader(s.name).iter_documents("train", 0, 0, 0)]
    return texts * copies


def bench_tokenize(work: Path, copies: int) -> None:
    import numpy as np
    import sentencepiece as spm
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader

    from training.data.pipeline.tokenize import SentencePieceShardWriter

    texts = demo_texts(copies)
    inputs = work / "tok_in"
    inputs.mkdir()
    for part in range(2):
        with (inputs / f"{part:05d}.jsonl").open("w") as handle:
            for text in texts[part::2]:
                handle.write(json.dumps({"text": text}) + "\n")
    sp = spm.SentencePieceProcessor(model_file=str(TOKENIZER))
    start = time.perf_counter()
    reference = sp.encode(texts, num_threads=2)
    baseline = time.perf_counter() - start
    start = time.perf_counter()
    LocalPipelineExecutor([JsonlReader(str(inputs)), SentencePieceShardWriter(TOKENIZER, work / "tok_out")], tasks=2,
                          workers=2, logging_dir=str(work / "tok_logs")).run()
    ours = time.perf_counter() - start
    start = time.perf_counter()  # the same stage as 2 tasks run in this process, 2 encoder threads each
    LocalPipelineExecutor([JsonlReader(str(inputs)), SentencePieceShardWriter(TOKENIZER, work / "tok_out1",
                                                                              num_threads=2)],
                          tasks=2, workers=1, logging_dir=str(work / "tok_logs1")).run()
    threaded = time.perf_counter() - start
    tokens = sum(len(ids) for ids in reference)
    got = [np.fromfile(work / "tok_out" / f"{r:05d}.ds", dtype=np.uint16) for r in range(2)]
    expected = [np.concatenate([[1, *ids, 2] for ids in reference[r::2]]) for r in range(2)]
    identical = all(np.array_equal(g, e) for g, e in zip(got, expected))
    print(f"tokenize: {len(texts)} documents, {sum(map(len, texts)) / 1e6:.1f} MB, {tokens:,} tokens; "
          f"sentencepiece num_threads=2 {tokens / baseline:,.0f} tok/s; prepare-data 2 tasks {tokens / ours:,.0f} "
          f"tok/s (2 worker processes; JSONL read + shard write included): ratio {baseline / ours:.2f}; in-process "
          f"tasks with 2 threads {tokens / threaded:,.0f} tok/s: ratio {baseline / threaded:.2f}; ids identical: "
          f"{identical}")


def bench_loader(work: Path) -> None:
    from training.data import PackedStream, demo_mixture_path, load_mixture
    from training.data.pipeline.mixture_shards import prepare_mixture_shards
    from training.data.token_shards import TokenShardStream

    mixture = load_mixture(demo_mixture_path())
    prepare_mixture_shards(mixture, TOKENIZER, work / "shards", tasks=2)
    sources = {s.name: (work / "shards" / "tokens" / s.name, s.weight) for s in mixture.sources}
    seq_len, micro, world = 2048, 8, 8
    stream = TokenShardStream(sources, seq_len, seed=0, rank=3, world_size=world)
    batches, start = 0, time.perf_counter()
    while time.perf_counter() - start < 3.0:
        stream.next_batch(micro)
        batches += 1
    ours = batches * micro * seq_len / (time.perf_counter() - start)

    import modeling_llama  # noqa: F401
    from transformers import AutoTokenizer
    folder = work / "hf_tok"
    folder.mkdir()
    shutil.copy(TOKENIZER, folder / "tokenizer.model")
    from modeling_llama import LlamaPaperTokenizerFast
    tokenizer = LlamaPaperTokenizerFast(vocab_file=str(folder / "tokenizer.model"))
    packed = PackedStream(mixture, tokenizer, seq_len=seq_len)
    batches, start = 0, time.perf_counter()
    while time.perf_counter() - start < 3.0:
        packed.next_batch(micro * world)[3 * micro: 4 * micro]  # the old path: every rank draws the global batch
        batches += 1
    before = batches * micro * seq_len / (time.perf_counter() - start)
    print(f"loader: one rank of {world}, {micro} x {seq_len} tokens per micro-batch: token shards {ours:,.0f} tok/s "
          f"= {ours / H100_1B_TOKENS_PER_S:.0f}x the 1B preset's ~75k tok/s on an H100; PackedStream (on-the-fly "
          f"tokenization of the global batch) {before:,.0f} tok/s; shards / PackedStream {ours / before:.0f}x")
    del AutoTokenizer


def replicate_commoncrawl(folder: Path, copies: int) -> int:
    rows = [json.loads(line) for path in sorted((SAMPLE / "common_crawl").glob("*.jsonl"))
            for line in path.read_text().splitlines()]
    folder.mkdir(parents=True)
    with (folder / "part-00.jsonl").open("w") as handle:
        for copy in range(copies):
            for row in rows:  # each copy gets its own first line, so documents are not whole duplicates
                handle.write(json.dumps({**row, "text": f"Page {copy} of the archive.\n" + row["text"]}) + "\n")
    return copies * len(rows)


def bench_filtering(work: Path, copies: int) -> None:
    import yaml
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.filters import LanguageFilter

    from training.data.pipeline.config import load_data_config
    from training.data.pipeline.filters import LocalLanguageFilter
    from training.data.pipeline.models import train_ngram, train_quality_classifier
    from training.data.pipeline.sources import Layout, input_reader, line_dedup_stages, source_stages, writer

    sample = work / "sample"
    shutil.copytree(SAMPLE, sample)
    texts = sample / "model_texts"
    positive = (texts / "wikiref_positive.txt").read_text().split("\n\n")
    train_quality_classifier(positive, (texts / "random_negative.txt").read_text().split("\n\n"),
                             sample / "models" / "wikiref-v1.bin", bucket=20000)
    train_ngram(positive, sample / "models" / "cc-v1.arpa")
    documents = replicate_commoncrawl(sample / "cc_big", copies)
    config_data = yaml.safe_load((sample / "sample.yaml").read_text())
    config_data["sources"] = [{"name": "common_crawl", "kind": "commoncrawl", "input": "cc_big",
                               "options": {"max_perplexity": 1.0e6}}]
    (sample / "bench.yaml").write_text(yaml.safe_dump(config_data))
    config = load_data_config(sample / "bench.yaml")

    def run(stages, logs):
        previous = None
        for stage in stages:
            previous = LocalPipelineExecutor(stage.pipeline, tasks=1, workers=1, logging_dir=str(logs / stage.name),
                                             depends=previous)
        start = time.process_time()  # CPU seconds of this process (1 task, in-process): robust to a shared machine
        previous.run()
        return time.process_time() - start

    ours = run(source_stages(config.source("common_crawl"), config, work / "ours", 1), work / "ours_logs")
    source = config.source("common_crawl")
    language = LocalLanguageFilter(config.model("language_id"))
    alone = LanguageFilter(languages=["en"], language_threshold=0.65)
    alone.model = language.model  # datatrove's own filter on the same local model
    stages = line_dedup_stages(Layout(work / "alone", "common_crawl"), lambda: input_reader(source),
                               [alone, writer(str(work / "alone" / "docs"))], 1)
    blocks = run(stages, work / "alone_logs")
    print(f"filtering (CommonCrawl sample x{copies} = {documents} documents, 1 task in-process, per CPU-second): "
          f"full CCNet pipeline {documents / ours:,.0f} docs/s; datatrove blocks alone (line dedup + LanguageFilter) "
          f"{documents / blocks:,.0f} docs/s; our steps' share of the time {1 - blocks / ours:.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=400, help="CommonCrawl sample copies for the filtering figure")
    parser.add_argument("--token-copies", type=int, default=8, help="demo corpus copies for the tokenization figure")
    args = parser.parse_args()
    import datatrove
    import sentencepiece
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"datatrove {datatrove.__version__ if hasattr(datatrove, '__version__') else '0.10.1'}, sentencepiece "
          f"{sentencepiece.__version__}; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        bench_filtering(work, args.copies)  # first: fastText training once hit "Encountered NaN" after the others
        bench_tokenize(work, args.token_copies)
        bench_loader(work)


if __name__ == "__main__":
    main()
