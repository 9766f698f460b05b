"""Generation speed: our decoding (modeling_llama/decoding.py) against transformers' generate() and lm_eval --model hf.

One saved LlamaPaperForCausalLM ("small" preset by default, real 32000-token LLaMA tokenizer; random, or trained
`--train-steps` steps on the fixture corpus, or any saved folder given by `--model`), same weights, prompts and
documents for every side, all in this process:

1. `generate`: batch-1 greedy decoding of one prompt, `llama-paper generate`'s path (`generate_text(...,
   temperature=0, compile=True)`) vs `model.generate(**inputs, max_new_tokens=N, do_sample=False)` with
   transformers' defaults. The compile (first call) is timed separately; then alternating runs, the fastest counts.
   The tokens must be identical.
   Besides wall time, the CPU time of each side is printed: on a machine shared with other jobs it is the
   steadier figure (it leaves out time spent descheduled, not cache or memory contention).
2. `gsm8k` and `humaneval`: generation requests of the harness tasks, built by lm-eval itself (gsm8k: its YAML over
   the fixture documents, 5 shots from its sampler, its stop strings; humaneval: the problem's prompt, its stop
   strings, T=0.8), with `max_gen_toks` set to `--max-gen-toks` on both sides. lm-eval's `HFLM.generate_until` gets
   each request `--num-samples` times (what `repeats: k` sends; gsm8k greedy: once); ours,
   `CausalLMAdapter.generate_until`, gets it once with n=k. Alternating rounds, the fastest counts; greedy
   completions are asserted identical. Generation only: executing programs or scoring costs both sides the same.
   Uncompiled on both sides (evaluation's default here: see evaluation/generation.py).

    python benchmarks/bench_generate.py --parts gsm8k,humaneval --threads 1     # ~2 min on 2 idle cores
    python benchmarks/bench_generate.py --parts generate --new-tokens 128 --repeats 3 --threads 1
    python benchmarks/bench_generate.py --parts generate --threads 1 --train-steps 100   # a briefly trained model

Optional part `gsm8k-sampled`: the gsm8k prompts with `--num-samples` samples each at T=0.8 (maj1@k's shape).
A random model never emits a stop string, so every row decodes `max_gen_toks` tokens on both sides (the case where
dropping finished rows cannot help); `--model DIR` runs a saved (trained) model instead.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "fixtures" / "eval"
TOKENIZER = ROOT / "tests" / "fixtures" / "llama-tokenizer" / "tokenizer.model"
CORPUS = ROOT / "tests" / "fixtures" / "data-pipeline"
PROMPT = "The LLaMA models were trained on publicly available data: CommonCrawl, C4, GitHub, Wikipedia, books,"


def save_model(folder: Path, preset: str, train_steps: int = 0) -> None:
    """A LLaMA of the given preset with the real tokenizer (random, or trained briefly), saved for from_pretrained."""
    import torch

    from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM, LlamaPaperTokenizerFast

    torch.manual_seed(0)
    config = LlamaPaperConfig.from_preset(preset, vocab_size=32000, max_position_embeddings=2048)
    model = LlamaPaperForCausalLM(config)
    tokenizer = LlamaPaperTokenizerFast(vocab_file=str(TOKENIZER))
    if train_steps:
        train_briefly(model, tokenizer, train_steps)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def train_briefly(model, tokenizer, steps: int, batch: int = 8, length: int = 64) -> None:
    """AdamW on the fixture corpus (books, Wikipedia, C4 samples): logits shaped like a real model's, not random."""
    import torch

    texts = [json.loads(line)["text"] for part in ("books", "wikipedia", "c4")
             for f in sorted((CORPUS / part).glob("*.jsonl")) for line in f.read_text().splitlines()]
    ids = torch.tensor([t for text in texts for t in tokenizer(text)["input_ids"]])
    windows = ids[: len(ids) // length * length].view(-1, length)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.1)
    start = time.perf_counter()
    for step in range(steps):
        rows = windows[torch.randint(len(windows), (batch,))]
        loss = model(input_ids=rows, labels=rows).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    print(f"trained {steps} steps ({len(windows)} windows of {length} tokens): last loss {loss.item():.2f}, "
          f"{time.perf_counter() - start:.0f} s")
    model.eval()


def timed(fn):
    """(seconds, result) of one call."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def timed_cpu(fn):
    """(wall seconds, CPU seconds of this process, result) of one call: on a shared machine the CPU time of a
    one-thread run is what it would take on an idle core; the wall time includes waiting for the CPU."""
    cpu = time.process_time()
    wall, out = timed(fn)
    return wall, time.process_time() - cpu, out


def bench_generate(folder: Path, new_tokens: int, repeats: int) -> None:
    """Batch-1 greedy: llama-paper generate's path (compiled) vs generate() with its defaults."""
    import torch

    from modeling_llama.generate import generate_text, load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(folder)
    ids = tok(PROMPT, return_tensors="pt")
    ours = lambda: generate_text(model, tok, PROMPT, new_tokens, temperature=0, compile=True)  # noqa: E731
    theirs = lambda: model.generate(**ids, max_new_tokens=new_tokens, do_sample=False)  # noqa: E731
    with torch.inference_mode():
        first, text = timed(ours)
        wall = {"ours": float("inf"), "theirs": float("inf")}
        cpu, results = dict(wall), {}
        for _ in range(repeats):
            for side, fn in (("theirs", theirs), ("ours", ours)):
                t, c, results[side] = timed_cpu(fn)
                wall[side], cpu[side] = min(wall[side], t), min(cpu[side], c)
    out, text = results["theirs"], results["ours"]
    ref = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert text == ref, f"greedy tokens differ:\n{text!r}\n{ref!r}"
    n = out.shape[1] - ids["input_ids"].shape[1]
    print(f"[generate] batch-1 greedy, {n} new tokens, prompt {ids['input_ids'].shape[1]} tokens; same text: True")
    print(f"  first call (compile + decode): {first:.1f} s; compile ~ {first - wall['ours']:.1f} s")
    print(f"  transformers generate(): {wall['theirs'] / n * 1e3:.2f} ms/token (thread CPU "
          f"{cpu['theirs'] / n * 1e3:.2f} ms/token)")
    print(f"  llama-paper generate:    {wall['ours'] / n * 1e3:.2f} ms/token (thread CPU "
          f"{cpu['ours'] / n * 1e3:.2f} ms/token)")
    print(f"  ratio (generate() time / ours): {wall['theirs'] / wall['ours']:.2f}x  "
          f"(thread CPU time: {cpu['theirs'] / cpu['ours']:.2f}x)")


def gsm8k_yaml(folder: Path, limit: int) -> str:
    """A local lm-eval YAML including the built-in gsm8k over the fixture documents (the rest is the few-shot pool)."""
    import lm_eval
    import yaml

    rows = (DATA / "gsm8k.jsonl").read_text().splitlines()
    (folder / "gsm8k.jsonl").write_text("\n".join(rows[:limit]) + "\n")
    (folder / "gsm8k_train.jsonl").write_text("\n".join(rows[limit:]) + "\n")  # the few-shot pool
    config = {"include": str(Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k.yaml"),
              "task": "bench_gsm8k", "dataset_path": "json", "dataset_name": None,
              "dataset_kwargs": {"data_files": {"test": str(folder / "gsm8k.jsonl"),
                                                "train": str(folder / "gsm8k_train.jsonl")}}}
    (folder / "bench_gsm8k.yaml").write_text(yaml.safe_dump(config))
    return "bench_gsm8k"


def gsm8k_requests(work: Path, limit: int, max_gen_toks: int) -> list[tuple[str, dict]]:
    """lm-eval's own gsm8k requests (5-shot prompts from its sampler, its generation kwargs) for `limit` documents."""
    from lm_eval.tasks import TaskManager, get_task_dict

    name = gsm8k_yaml(work, limit)
    task = get_task_dict([name], TaskManager(include_path=str(work), include_defaults=False))[name]
    task.set_fewshot_seed(seed=1234)  # lm-eval's default few-shot seed (simple_evaluate sets it the same way)
    task.build_all_requests(limit=limit)
    return [(inst.args[0], {**inst.args[1], "max_gen_toks": max_gen_toks}) for inst in task.instances]


def humaneval_requests(limit: int, max_gen_toks: int) -> list[tuple[str, dict]]:
    """lm-eval's humaneval request (0-shot, the prompt itself, its stop strings) at T=0.8 for `limit` problems."""
    from evaluation.tasks import get_task

    until = get_task("humaneval", "harness").generation["until"]
    docs = [json.loads(line) for line in (DATA / "humaneval.jsonl").read_text().splitlines()[:limit]]
    return [(d["prompt"], {"until": until, "max_gen_toks": max_gen_toks, "do_sample": True, "temperature": 0.8})
            for d in docs]


def compare(name: str, folder: Path, requests: list[tuple[str, dict]], samples: int, batch_size: int,
            rounds: int) -> None:
    """One task's generation requests: lm-eval `HFLM.generate_until` with each request repeated `samples` times
    (what `repeats: k` sends) vs our `CausalLMAdapter.generate_until` with n=k; alternating, fastest counts."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from evaluation.model_adapter import CausalLMAdapter

    adapter = CausalLMAdapter.from_pretrained(str(folder), device="cpu", batch_size=batch_size, progress=False)
    lm = HFLM(pretrained=str(folder), dtype="float32", batch_size=batch_size, device="cpu")
    instances = [Instance("generate_until", {}, (c, dict(k)), i) for i, (c, k) in enumerate(requests)
                 for _ in range(samples)]
    ours_requests = [(c, {**k, "n": samples}) for c, k in requests]
    width = max(len(adapter.tok_encode(c)) for c, _ in requests)
    print(f"[{name}] {len(requests)} documents x {samples} samples, max_gen_toks {requests[0][1]['max_gen_toks']}, "
          f"batch {batch_size}, longest prompt {width} tokens", flush=True)
    best = {"lm-eval": [float("inf")] * 2, "ours": [float("inf")] * 2}  # (wall, cpu)
    outputs: dict[str, list] = {}
    for r in range(rounds):
        for side, fn in (("lm-eval", lambda: lm.generate_until(instances, disable_tqdm=True)),
                         ("ours", lambda: adapter.generate_until(ours_requests))):
            wall, cpu, out = timed_cpu(fn)
            best[side] = [min(best[side][0], wall), min(best[side][1], cpu)]
            outputs[side] = out
            print(f"  round {r + 1}: {side:7s} wall {wall:6.1f} s, CPU {cpu:6.1f} s (load average "
                  f"{os.getloadavg()[0]:.1f})", flush=True)
    theirs, mine = outputs["lm-eval"], outputs["ours"]
    assert len(theirs) == len(requests) * samples and all(len(m) == samples for m in mine)
    if not requests[0][1].get("do_sample"):  # greedy: the same completions, document for document
        same = [m[0] for m in mine] == theirs
        assert same, f"{name}: greedy completions differ from lm-eval's"
        print(f"  greedy completions identical to lm-eval's: {same} ({len(theirs)} documents)", flush=True)
    print(f"  ratio (lm-eval time / ours): wall {best['lm-eval'][0] / best['ours'][0]:.2f}x, "
          f"CPU {best['lm-eval'][1] / best['ours'][1]:.2f}x", flush=True)


def main() -> None:
    """Run the parts asked for and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="generate,gsm8k,humaneval")
    parser.add_argument("--preset", default="small", help="random model of this preset (without --model)")
    parser.add_argument("--model", default=None, help="a saved model folder to use instead of a random one")
    parser.add_argument("--new-tokens", type=int, default=128, help="batch-1 part: tokens to generate")
    parser.add_argument("--repeats", type=int, default=3, help="batch-1 part: alternating runs; fastest counts")
    parser.add_argument("--limit", type=int, default=8, help="task parts: documents of gsm8k / problems of humaneval")
    parser.add_argument("--num-samples", type=int, default=10, help="humaneval samples per problem (lm-eval repeats)")
    parser.add_argument("--max-gen-toks", type=int, default=128, help="task parts: new tokens at most (tasks: 256/1024)")
    parser.add_argument("--batch-size", type=int, default=16, help="task parts: batch size of both sides")
    parser.add_argument("--rounds", type=int, default=1, help="task parts: alternating rounds; the fastest counts")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--train-steps", type=int, default=0,
                        help="train the new model this many AdamW steps on the fixture corpus first (0: random)")
    args = parser.parse_args()
    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
          f"preset {args.preset}, load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder, work = Path(tmp) / "model", Path(tmp) / "work"
        work.mkdir()
        if args.model:
            folder = Path(args.model)
        else:
            save_model(folder, args.preset, args.train_steps)
        parts = args.parts.split(",")
        if "generate" in parts:
            bench_generate(folder, args.new_tokens, args.repeats)
        if "gsm8k" in parts:
            compare("gsm8k", folder, gsm8k_requests(work, args.limit, args.max_gen_toks), 1, args.batch_size,
                    args.rounds)
        if "gsm8k-sampled" in parts:  # maj1@k's shape: long few-shot prompts, k samples each (not a default part)
            sampled = [(c, {**k, "do_sample": True, "temperature": 0.8})
                       for c, k in gsm8k_requests(work, args.limit, args.max_gen_toks)]
            compare("gsm8k-sampled", folder, sampled, args.num_samples, args.batch_size, args.rounds)
        if "humaneval" in parts:
            compare("humaneval", folder, humaneval_requests(args.limit, args.max_gen_toks), args.num_samples,
                    args.batch_size, args.rounds)


if __name__ == "__main__":
    main()
