"""Generation speed: our decoding (modeling_llama/decoding.py) against transformers' generate() and lm_eval --model hf.

One saved LlamaPaperForCausalLM ("small" preset by default, real 32000-token LLaMA tokenizer; random, or trained
`--train-steps` steps on the fixture corpus, or any saved folder given by `--model`), same weights, prompts and
documents for every side, all in this process:

1. `generate`: batch-1 greedy decoding of one prompt, `llama-paper generate`'s path (`generate_text(...,
   temperature=0, compile=True)`) vs `model.generate(**inputs, max_new_tokens=N, do_sample=False)` with
   transformers' defaults. The compile (first call) is timed separately; then alternating runs, the fastest counts.
   The tokens must be identical. Besides wall time, the thread CPU time of each side is printed: on a machine shared
   with other jobs it is the steadier figure (it leaves out time spent descheduled, not cache or memory contention).
2. `gsm8k`: the harness task (5 shots, greedy, until "Question:", 256 new tokens) end to end: our
   `runner.evaluate_task` vs `lm_eval.simple_evaluate(model="hf")` on the same documents, batch size and model;
   the completions must be identical.
3. `humaneval`: k samples per problem at T=0.8 (lm-eval's `repeats`: k copies of each request through
   `HFLM.generate_until`) vs our `CausalLMAdapter.generate_until` with n=k (one prefill per problem shared by its
   samples). Generation only: executing the programs costs both sides the same.

    python benchmarks/bench_generate.py --parts generate,gsm8k,humaneval --preset small --limit 8 --num-samples 10
    python benchmarks/bench_generate.py --parts generate --threads 1 --train-steps 100   # a briefly trained model
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
    """(wall seconds, this thread's CPU seconds, result) of one call."""
    start, cpu = time.perf_counter(), time.thread_time()
    out = fn()
    return time.perf_counter() - start, time.thread_time() - cpu, out


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


def gsm8k_yaml(folder: Path, limit: int) -> tuple[str, Path]:
    """A local lm-eval YAML including the built-in gsm8k over the fixture documents, and our --data-dir."""
    import lm_eval
    import yaml

    rows = (DATA / "gsm8k.jsonl").read_text().splitlines()
    ours = folder / "ours"
    ours.mkdir(exist_ok=True)
    (ours / "gsm8k.jsonl").write_text("\n".join(rows[:limit]) + "\n")
    (ours / "gsm8k_train.jsonl").write_text("\n".join(rows[limit:]) + "\n")  # the few-shot pool
    config = {"include": str(Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k.yaml"),
              "task": "bench_gsm8k", "dataset_path": "json", "dataset_name": None,
              "dataset_kwargs": {"data_files": {"test": str(ours / "gsm8k.jsonl"),
                                                "train": str(ours / "gsm8k_train.jsonl")}}}
    (folder / "bench_gsm8k.yaml").write_text(yaml.safe_dump(config))
    return "bench_gsm8k", ours


def bench_gsm8k(folder: Path, work: Path, limit: int, batch_size: int) -> None:
    """gsm8k (greedy) end to end: ours vs lm_eval --model hf, same documents; completions asserted equal."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from evaluation.model_adapter import CausalLMAdapter
    from evaluation.runner import evaluate_task

    name, data_dir = gsm8k_yaml(work, limit)

    def load():
        return CausalLMAdapter.from_pretrained(str(folder), device="cpu", batch_size=batch_size, progress=False,
                                               compile_generation=True)

    def ours(adapter):
        return evaluate_task(adapter, "gsm8k", "harness", data_dir=str(data_dir), limit=limit)[1]

    def theirs():
        return lm_eval.simple_evaluate(
            model="hf", model_args=f"pretrained={folder},dtype=float32", tasks=[name], batch_size=batch_size,
            device="cpu", limit=limit, bootstrap_iters=0, log_samples=True,
            task_manager=TaskManager(include_path=str(work), include_defaults=False))["samples"][name]

    t_load, adapter = timed(load)
    first, mine = timed(lambda: ours(adapter))  # includes compiling the decode step (once per model object)
    first += t_load
    t_theirs, ref = timed(theirs)
    t_ours, mine = timed(lambda: ours(adapter))
    t_ours += t_load  # lm-eval's time includes loading the model: count ours too
    ref = {s["doc_id"]: s["resps"][0][0] for s in ref}
    same = all(s["completion"] == ref[s["doc_id"]] for s in mine)
    assert same and len(mine) == len(ref) == limit, "gsm8k completions differ from lm-eval's"
    print(f"[gsm8k] {limit} documents, 5-shot, greedy, batch {batch_size}; same completions: {same}")
    print(f"  lm_eval --model hf: {t_theirs:.1f} s; ours: {t_ours:.1f} s (first run, compile included: {first:.1f} s)")
    print(f"  ratio (lm-eval time / ours): {t_theirs / t_ours:.2f}x  (with compile: {t_theirs / first:.2f}x)")


def bench_humaneval(folder: Path, limit: int, num_samples: int, batch_size: int, max_gen_toks: int) -> None:
    """humaneval, k samples at T=0.8: lm-eval's k repeated requests vs our n=k (shared prefill)."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from evaluation.model_adapter import CausalLMAdapter
    from evaluation.tasks import get_task

    task = get_task("humaneval", "harness")
    docs = [json.loads(line) for line in (DATA / "humaneval.jsonl").read_text().splitlines()[:limit]]
    kwargs = {"until": task.generation["until"], "max_gen_toks": max_gen_toks, "do_sample": True,
              "temperature": 0.8}
    adapter = CausalLMAdapter.from_pretrained(str(folder), device="cpu", batch_size=batch_size, progress=False,
                                              compile_generation=True)
    ours = lambda: adapter.generate_until([(d["prompt"], {**kwargs, "n": num_samples}) for d in docs])  # noqa: E731
    lm = HFLM(pretrained=str(folder), dtype="float32", batch_size=batch_size, device="cpu")
    requests = [Instance("generate_until", d, (d["prompt"], dict(kwargs)), i) for i, d in enumerate(docs)
                for _ in range(num_samples)]  # what lm-eval's `repeats: k` sends
    first, _ = timed(ours)
    t_theirs, theirs = timed(lambda: lm.generate_until(requests))
    t_ours, mine = timed(ours)
    assert len(theirs) == len(docs) * num_samples and all(len(m) == num_samples for m in mine)
    print(f"[humaneval] {limit} problems x {num_samples} samples at T=0.8, max_gen_toks {max_gen_toks}, "
          f"batch {batch_size} (generation only)")
    print(f"  lm-eval HFLM.generate_until (repeats): {t_theirs:.1f} s; ours: {t_ours:.1f} s "
          f"(first run, compile included: {first:.1f} s)")
    print(f"  ratio (lm-eval time / ours): {t_theirs / t_ours:.2f}x  (with compile: {t_theirs / first:.2f}x)")


def main() -> None:
    """Run the parts asked for and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="generate,gsm8k,humaneval")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--new-tokens", type=int, default=128, help="batch-1 part: tokens to generate")
    parser.add_argument("--repeats", type=int, default=3, help="batch-1 part: alternating runs; fastest counts")
    parser.add_argument("--limit", type=int, default=8, help="documents of gsm8k / problems of humaneval")
    parser.add_argument("--num-samples", type=int, default=10, help="humaneval samples per problem")
    parser.add_argument("--max-gen-toks", type=int, default=1024, help="humaneval new tokens (task default 1024)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--model", default=None, help="a saved model folder to use instead of a new small model")
    parser.add_argument("--train-steps", type=int, default=0,
                        help="train the new model this many AdamW steps on the fixture corpus first (0: random)")
    args = parser.parse_args()
    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
          f"preset {args.preset}")
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
            bench_gsm8k(folder, work, args.limit, args.batch_size)
        if "humaneval" in parts:
            bench_humaneval(folder, args.limit, args.num_samples, args.batch_size, args.max_gen_toks)


if __name__ == "__main__":
    main()
