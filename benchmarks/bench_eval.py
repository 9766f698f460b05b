"""Wall time of our `--protocol harness` vs `lm_eval --model hf` on the same tasks, documents and model.

Both run in this process on the same saved model folder (a random LlamaPaperForCausalLM, "small" preset by default,
real 32000-token LLaMA tokenizer) and the same fixture documents; lm-eval runs its built-in task YAMLs pointed at the
local JSON (as in tests/evaluation/test_harness_equivalence.py). Two timings:
- end to end: our `runner.evaluate` vs `lm_eval.simple_evaluate` (model load + data + prompts + scoring);
- scoring only: the identical list of (context, continuation) requests through our `CausalLMAdapter.loglikelihood`
  vs lm-eval's `HFLM.loglikelihood`.
Prints the ratio (lm-eval time / ours) and the largest |Δll| between the two, which must stay tiny.

    python benchmarks/bench_eval.py --tasks commonsense --limit 50 --preset small --batch-size 16
    python benchmarks/bench_eval.py --parts e2e --repeats 2     # the judged ratio only, ~2 min on 2 idle cores
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "fixtures" / "eval"
TOKENIZER = ROOT / "tests" / "fixtures" / "llama-tokenizer" / "tokenizer.model"
BUILTIN = {
    "boolq": ("super_glue/boolq/default.yaml", "validation"), "piqa": ("piqa/piqa.yaml", "validation"),
    "social_iqa": ("siqa/siqa.yaml", "validation"), "hellaswag": ("hellaswag/hellaswag.yaml", "validation"),
    "winogrande": ("winogrande/default.yaml", "validation"), "arc_easy": ("arc/arc_easy.yaml", "test"),
    "arc_challenge": ("arc/arc_challenge.yaml", "test"), "openbookqa": ("openbookqa/openbookqa.yaml", "test"),
}


def save_model(folder: Path, preset: str) -> None:
    """A random LLaMA of the given preset with the real tokenizer, saved for AutoModelForCausalLM."""
    import torch

    from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM, LlamaPaperTokenizerFast

    torch.manual_seed(0)
    config = LlamaPaperConfig.from_preset(preset, vocab_size=32000, max_position_embeddings=2048)
    LlamaPaperForCausalLM(config).save_pretrained(folder)
    LlamaPaperTokenizerFast(vocab_file=str(TOKENIZER)).save_pretrained(folder)


def local_yamls(folder: Path, tasks: list[str], data_dir: Path) -> list[str]:
    """YAMLs that include lm-eval's built-in task and read the fixture JSON (boolq: super_glue's integer label)."""
    import lm_eval
    import yaml

    builtin_root = Path(lm_eval.__file__).parent / "tasks"
    names = []
    for task in tasks:
        builtin, split = BUILTIN[task]
        file = data_dir / {"social_iqa": "social_i_qa.jsonl"}.get(task, f"{task}.jsonl")
        if task == "boolq":
            rows = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
            file = folder / "boolq_superglue.jsonl"
            file.write_text("".join(json.dumps({**r, "label": int(r["answer"])}) + "\n" for r in rows))
        config = {"include": str(builtin_root / builtin), "task": f"bench_{task}", "dataset_path": "json",
                  "dataset_name": None, "dataset_kwargs": {"data_files": {split: str(file), "train": str(file)}}}
        (folder / f"bench_{task}.yaml").write_text(yaml.safe_dump(config))
        names.append(f"bench_{task}")
    return names


def main() -> None:
    """Run both, print timings and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="commonsense")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each; the fastest counts")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: stable on a shared CPU)")
    parser.add_argument("--parts", default="e2e,scoring", help="e2e (the judged ratio), scoring (the same requests "
                        "through both scorers); `--parts e2e --repeats 2` takes ~2 min on 2 idle cores")
    args = parser.parse_args()
    parts = args.parts.split(",")

    import lm_eval
    import torch
    import transformers
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from evaluation.model_adapter import CausalLMAdapter
    from evaluation.runner import evaluate
    from evaluation.tasks import resolve_tasks

    torch.set_num_threads(args.threads)
    tasks = resolve_tasks(args.tasks)
    print(f"machine: {os.cpu_count()} CPU cores; load average {os.getloadavg()[0]:.1f} at the start; torch "
          f"{torch.__version__}, transformers {transformers.__version__}, lm_eval {lm_eval.__version__}; threads "
          f"{torch.get_num_threads()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    try:
        model_dir = work / "model"
        save_model(model_dir, args.preset)
        names = local_yamls(work, tasks, DATA)
        manager = TaskManager(include_path=str(work), include_defaults=False)

        def run_ours():
            adapter = CausalLMAdapter.from_pretrained(str(model_dir), device="cpu", batch_size=args.batch_size,
                                                      progress=False)
            return adapter, *evaluate(adapter, tasks, "harness", limit=args.limit, data_dir=str(DATA))

        def run_theirs():
            return lm_eval.simple_evaluate(
                model="hf", tasks=names, batch_size=args.batch_size, device="cpu", limit=args.limit,
                model_args=f"pretrained={model_dir},dtype=float32,softmax_dtype=float32,trust_remote_code=True",
                bootstrap_iters=0, log_samples=True, task_manager=manager)

        ours_e2e = theirs_e2e = ours_cpu = theirs_cpu = float("inf")
        for r in range(args.repeats):  # alternate, so load on the shared machine hits both alike
            t0, c0 = time.perf_counter(), time.process_time()
            theirs = run_theirs()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            theirs_e2e, theirs_cpu = min(theirs_e2e, wall), min(theirs_cpu, cpu)
            print(f"  round {r + 1}: lm_eval --model hf end to end {wall:.1f} s (CPU {cpu:.1f} s)", flush=True)
            t0, c0 = time.perf_counter(), time.process_time()
            adapter, ours_report, ours_samples = run_ours()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            ours_e2e, ours_cpu = min(ours_e2e, wall), min(ours_cpu, cpu)
            print(f"  round {r + 1}: ours end to end {wall:.1f} s (CPU {cpu:.1f} s)", flush=True)

        # Scoring only: exactly the same requests through both engines.
        requests = []
        for s in ours_samples:
            ctxs, conts = s["contexts"], s["continuations"]
            requests += [(c, conts[0]) for c in ctxs] if len(ctxs) > 1 else [(ctxs[0], k) for k in conts]
        ours_score = theirs_score = float("inf")
        ours_ll = ref_ll = []
        if "scoring" in parts:
            lm = HFLM(pretrained=str(model_dir), dtype="float32", softmax_dtype="float32", device="cpu",
                      batch_size=args.batch_size, trust_remote_code=True)
            instances = [Instance("loglikelihood", {}, r, i) for i, r in enumerate(requests)]
            for r in range(args.repeats):
                t0 = time.perf_counter()
                ref_ll = lm.loglikelihood(instances, disable_tqdm=True)
                theirs_score = min(theirs_score, time.perf_counter() - t0)
                t0 = time.perf_counter()
                ours_ll = adapter.loglikelihood(requests)
                ours_score = min(ours_score, time.perf_counter() - t0)
                print(f"  round {r + 1}: scoring only, lm-eval {theirs_score:.1f} s, ours {ours_score:.1f} s",
                      flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    agree = {t: (ours_report["results"][t]["metrics"]["acc"]["value"], theirs["results"][f"bench_{t}"]["acc,none"])
             for t in tasks}
    print(f"load average {os.getloadavg()[0]:.1f} at the end (2 cores: above ~2 the figures are not idle figures)")
    print(f"model: random LlamaPaperForCausalLM preset {args.preset!r}, vocab 32000; tasks {','.join(tasks)}; "
          f"limit {args.limit}; batch size {args.batch_size}; {len(requests)} loglikelihood requests")
    print(f"end to end : ours {ours_e2e:7.1f} s   lm_eval --model hf {theirs_e2e:7.1f} s   "
          f"ratio {theirs_e2e / ours_e2e:.2f}x")
    print(f"end to end, CPU time of this process: ours {ours_cpu:.1f} s, lm-eval {theirs_cpu:.1f} s, ratio "
          f"{theirs_cpu / ours_cpu:.2f}x (one torch thread: on a shared machine, what an idle core would take)")
    if "scoring" in parts:
        print(f"scoring    : ours {ours_score:7.1f} s   HFLM.loglikelihood  {theirs_score:7.1f} s   "
              f"ratio {theirs_score / ours_score:.2f}x")
        max_diff = max(abs(a[0] - b[0]) for a, b in zip(ours_ll, ref_ll))
        same_greedy = all(a[1] == b[1] for a, b in zip(ours_ll, ref_ll))
        print(f"max |Δll| = {max_diff:.2e}; identical is_greedy: {same_greedy}")
    print(f"acc ours vs lm-eval (must agree): {agree}")


if __name__ == "__main__":
    main()
