"""Evaluate a model on tasks under one protocol: build requests, score them, compute per-document and task metrics.

All requests of a task go to the adapter in one call, so the scorer can batch by length and share contexts across
the task's documents. Documents are visited in file order (few-shot sampling depends on it, as in lm-eval).
"""

from __future__ import annotations

import math
import platform
import re
import time
from typing import Any

from . import data
from .answer_matching import majority_vote
from .distributed import World, run_batches
from .model_adapter import CausalLMAdapter
from .pass_at_k import pass_at_k
from .sandbox import code_execution_allowed, run_program
from .scoring import mean_and_stderr, multiple_choice_metrics
from .tasks import PROGRAMS, get_task, resolve_tasks
from .tasks.base import Task
from .throughput import Meter


def _prompts(task: Task, docs: list[dict], k: int, data_dir: str | None, seed: int) -> list[list[str]]:
    pool: list[dict] = []
    if k > 0 and task.fixed_fewshot is None:
        pool = data.load_docs(task, data_dir, fewshot=True)
    drawer = task.sampler(pool, seed)
    return [task.contexts(doc, drawer.draw(doc, k)) for doc in docs]


def _multiple_choice(adapter: CausalLMAdapter, task: Task, docs: list[dict], contexts: list[list[str]]):
    requests, spans = [], []
    with_answer = "acc_answer" in task.metrics
    for doc, ctxs in zip(docs, contexts):
        conts = task.continuations(doc)
        pairs = [(c, conts[0]) for c in ctxs] if task.multiple_input else [(ctxs[0], k) for k in conts]
        if with_answer:  # the paper's unconditional denominator P(c | "Answer:")
            pairs += [(task.unconditional_context, k) for k in conts]
        spans.append((len(requests), len(pairs)))
        requests.extend(pairs)
    scores = adapter.loglikelihood(requests)
    per_doc, samples = [], []
    for doc, ctxs, (start, n) in zip(docs, contexts, spans):
        res = scores[start:start + n]
        n_cond = n // 2 if with_answer else n
        lls = [r[0] for r in res[:n_cond]]
        lls_answer = [r[0] for r in res[n_cond:]] if with_answer else None
        choices = task.choices(doc)
        labels = doc.get("mc2_targets", {}).get("labels") if "mc2" in task.metrics else None
        gold = task.gold(doc)
        metrics, pred = multiple_choice_metrics(task.metrics, lls, choices, gold, lls_answer, labels)
        per_doc.append(metrics)
        sample = {"contexts": ctxs,
                  "continuations": [r[1] for r in requests[start:start + n_cond]], "loglikelihoods": lls,
                  "is_greedy": [r[1] for r in res[:n_cond]], "prediction": pred, "target": gold, "metrics": metrics}
        if with_answer:
            sample["loglikelihoods_answer"] = lls_answer
        samples.append(sample)
    return per_doc, samples


def _generation_kwargs(task: Task, **extra: Any) -> dict[str, Any]:
    kwargs = {k: v for k, v in task.generation.items() if k not in ("maj_k", "maj_temperature", "code_samples", "n")}
    kwargs.update(extra)
    return kwargs


def _free_form(adapter: CausalLMAdapter, task: Task, docs: list[dict], contexts: list[list[str]],
               num_samples: int | None):
    prompts = [c[0] for c in contexts]
    greedy = [c[0] for c in adapter.generate_until([(p, _generation_kwargs(task)) for p in prompts])]
    per_doc, samples = [], []
    voted = None
    if "maj1@k" in task.metrics:
        k = num_samples or task.generation["maj_k"]
        sampled = adapter.generate_until(
            [(p, _generation_kwargs(task, temperature=task.generation["maj_temperature"], do_sample=True, n=k))
             for p in prompts])
        extract = task.filters[-1][1]
        voted = [majority_vote([extract(s) for s in outs]) for outs in sampled]
    for i, (doc, completion) in enumerate(zip(docs, greedy)):
        target = task.doc_to_target(doc)
        metrics, answers = {}, {}
        for fname, extract in task.filters:
            answers[fname] = extract(completion)
            key = "exact_match" if len(task.filters) == 1 else f"exact_match,{fname}"
            metrics[key] = task.match(answers[fname], target)
        if voted is not None:
            metrics["maj1@k"] = task.match(voted[i], target)
        per_doc.append(metrics)
        samples.append({"contexts": [prompts[i]], "completion": completion, "prediction": answers,
                        "target": target, "metrics": metrics, **({"majority": voted[i]} if voted else {})})
    return per_doc, samples


def _code(adapter: CausalLMAdapter, task: Task, docs: list[dict], contexts: list[list[str]],
          num_samples: int | None, timeout: float):
    program = PROGRAMS[task.name]
    prompts = [c[0] for c in contexts]
    runs = (((None, (1,)),) if "pass@1" in task.metrics else task.generation["code_samples"])
    per_doc: list[dict[str, float]] = [{} for _ in docs]
    samples = [{"contexts": [p], "target": task.doc_to_target(d), "completions": {}, "passed": {}, "metrics": m}
               for p, d, m in zip(prompts, docs, per_doc)]
    for temperature, ks in runs:
        n = 1 if temperature is None else (num_samples or task.generation["n"])
        extra = {} if temperature is None else {"temperature": temperature, "do_sample": True, "n": n}
        outs = adapter.generate_until([(p, _generation_kwargs(task, **extra)) for p in prompts])
        # identical samples of a document are executed once; with several processes each runs its share
        programs = {(i, c): program(doc, c) + "\n" + task.doc_to_target(doc)
                    for i, (doc, completions) in enumerate(zip(docs, outs)) for c in dict.fromkeys(completions)}
        verdict = _run_programs(getattr(adapter, "world", None), programs, timeout)
        for i, (doc, completions) in enumerate(zip(docs, outs)):
            passed = [verdict[(i, c)] for c in completions]
            tag = "greedy" if temperature is None else f"T={temperature}"
            samples[i]["completions"][tag], samples[i]["passed"][tag] = completions, passed
            for k in ks:
                if k <= n:
                    per_doc[i][f"pass@{k}"] = pass_at_k(n, sum(passed), k)
    return per_doc, samples


def _run_programs(world: World | None, programs: dict[tuple, str], timeout: float) -> dict[tuple, bool]:
    """Whether each program passed; with several processes the programs are shared out and the verdicts gathered."""
    if world is None or world.dp_size == 1:
        return {key: run_program(text, timeout=timeout).passed for key, text in programs.items()}
    keys = list(programs)
    batches = [[k] for k in keys]
    verdicts, _ = run_batches(world, batches, keys=lambda b: b, cost=lambda b: 1.0, tokens=lambda b, r: 0,
                              compute=lambda b: {b[0]: run_program(programs[b[0]], timeout=timeout).passed})
    return verdicts


def _rolling(adapter: CausalLMAdapter, task: Task, docs: list[dict]):
    texts = [task.doc_to_target(d) for d in docs]
    lls = adapter.loglikelihood_rolling(texts, add_special_tokens=None if task.protocol == "harness" else False)
    samples = [{"contexts": [], "target": t, "loglikelihood": ll, "words": len(re.split(r"\s+", t)),
                "bytes": len(t.encode("utf-8")), "metrics": {}} for t, ll in zip(texts, lls)]
    return lls, samples


def _aggregate_rolling(samples: list[dict]) -> dict[str, dict[str, float | None]]:
    # Perplexities are ratios of sums over the whole corpus (lm-eval's weighted_perplexity / bits_per_byte).
    ll = sum(s["loglikelihood"] for s in samples)
    words, nbytes = sum(s["words"] for s in samples), sum(s["bytes"] for s in samples)
    return {"word_perplexity": {"value": math.exp(-ll / words), "stderr": None},
            "byte_perplexity": {"value": math.exp(-ll / nbytes), "stderr": None},
            "bits_per_byte": {"value": -ll / nbytes / math.log(2), "stderr": None}}


def evaluate_task(adapter: CausalLMAdapter, name: str, protocol: str = "harness", *, num_fewshot: int | None = None,
                  limit: int | None = None, data_dir: str | None = None, fewshot_seed: int = 1234,
                  allow_code_execution: bool = False, num_samples: int | None = None,
                  code_timeout: float = 10.0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(task result, per-document samples) for one task."""
    task = get_task(name, protocol)
    if task.name in PROGRAMS and not code_execution_allowed(allow_code_execution):
        raise PermissionError(f"task {name!r} runs model-generated code; pass --allow-code-execution (or set "
                              "HF_ALLOW_CODE_EVAL=1) to allow it. Programs run in a resource-limited sandbox.")
    start = time.perf_counter()
    if hasattr(adapter, "meter"):
        adapter.meter = Meter()  # this task's requests/s, tokens/s and cache hits
    docs = data.load_docs(task, data_dir)
    docs = docs[:limit] if limit is not None else docs
    if not docs:
        raise data.DataError(f"task {name!r}: no documents to evaluate.")
    k = task.num_fewshot if num_fewshot is None else num_fewshot
    if task.output_type == "loglikelihood_rolling":
        _, samples = _rolling(adapter, task, docs)
        metrics = _aggregate_rolling(samples)
        k = 0
    else:
        contexts = _prompts(task, docs, k, data_dir, fewshot_seed)
        if task.output_type == "multiple_choice":
            per_doc, samples = _multiple_choice(adapter, task, docs, contexts)
        elif task.name in PROGRAMS:
            per_doc, samples = _code(adapter, task, docs, contexts, num_samples, code_timeout)
        else:
            per_doc, samples = _free_form(adapter, task, docs, contexts, num_samples)
        names = list(dict.fromkeys(m for d in per_doc for m in d))
        metrics = {}
        for m in names:
            value, stderr = mean_and_stderr([d[m] for d in per_doc if m in d])
            metrics[m] = {"value": value, "stderr": stderr}
    for i, s in enumerate(samples):
        s.update(task=name, doc_id=i)
    result = {"metrics": metrics, "protocol": protocol, "num_fewshot": k, "n": len(docs),
              "dataset": dataset_info(task), "wall_time_s": time.perf_counter() - start}
    if hasattr(adapter, "meter"):
        result["throughput"] = adapter.meter.as_dict()
    return result, samples


def dataset_info(task: Task) -> dict[str, Any]:
    """The Hub dataset a task's documents come from (model cards' model-index names it)."""
    name = task.source.hub_name
    return {"path": task.source.hub_path, "name": name if isinstance(name, str) else None,
            "split": task.source.split}


def versions() -> dict[str, str]:
    """Versions of the software that produced a result."""
    import torch
    import transformers

    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("llama-paper")
    except PackageNotFoundError:
        ours = "unknown"
    return {"llama_paper": ours, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


def evaluate(adapter: CausalLMAdapter, tasks: str | list[str], protocol: str = "harness",
             **kwargs: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Results for every task (with model, protocol, versions, wall times) and all samples."""
    start = time.perf_counter()
    results, samples = {}, []
    for name in resolve_tasks(tasks):
        results[name], task_samples = evaluate_task(adapter, name, protocol, **kwargs)
        samples.extend(task_samples)
    report = {"results": results, "model": adapter.name, "protocol": protocol, "versions": versions(),
              "config": {k: v for k, v in kwargs.items()}, "wall_time_s": time.perf_counter() - start}
    return report, samples
