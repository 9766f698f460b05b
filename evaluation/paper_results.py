"""The LLaMA paper's published numbers (Touvron et al. 2023, Tables 3-7; see PAPER.md §6) and the comparison table.

Each entry: the paper's metric, its shot count, and the score (in %) per model size. Our number for a task is its
primary metric: under `--protocol paper` the paper's rule, under `--protocol harness` lm-eval's acc_norm where the
task has it, else its first metric. RACE here is RACE-high (lm-eval's `race` is the high subset).
"""

from __future__ import annotations

from typing import Any

SIZES = ("7B", "13B", "33B", "65B")

PAPER_RESULTS: dict[str, dict[str, Any]] = {
    "boolq": {"metric": "accuracy", "shots": 0, "scores": (76.5, 78.1, 83.1, 85.3)},
    "piqa": {"metric": "accuracy", "shots": 0, "scores": (79.8, 80.1, 82.3, 82.8)},
    "social_iqa": {"metric": "accuracy", "shots": 0, "scores": (48.9, 50.4, 50.4, 52.3)},
    "hellaswag": {"metric": "accuracy", "shots": 0, "scores": (76.1, 79.2, 82.8, 84.2)},
    "winogrande": {"metric": "accuracy", "shots": 0, "scores": (70.1, 73.0, 76.0, 77.0)},
    "arc_easy": {"metric": "accuracy", "shots": 0, "scores": (72.8, 74.8, 80.0, 78.9)},
    "arc_challenge": {"metric": "accuracy", "shots": 0, "scores": (47.6, 52.7, 57.8, 56.0)},
    "openbookqa": {"metric": "accuracy", "shots": 0, "scores": (57.2, 56.4, 58.6, 60.2)},
    "nq_open": {"metric": "exact match", "shots": 0, "scores": (16.8, 20.1, 24.9, 23.8)},
    "triviaqa": {"metric": "exact match", "shots": 0, "scores": (50.0, 56.6, 65.1, 68.2)},
    "race": {"metric": "accuracy (high)", "shots": 0, "scores": (46.9, 47.2, 48.3, 51.6)},
    "gsm8k": {"metric": "exact match", "shots": 8, "scores": (11.0, 17.8, 35.6, 50.9)},
    "humaneval": {"metric": "pass@1", "shots": 0, "scores": (10.5, 15.8, 21.7, 23.7)},
    "mbpp": {"metric": "pass@1", "shots": 3, "scores": (17.7, 22.0, 30.2, 37.7)},
    "mmlu": {"metric": "accuracy", "shots": 5, "scores": (35.1, 46.9, 57.8, 63.4)},
}


def primary_metric(result: dict[str, Any]) -> str | None:
    """The metric of a task result that is compared with the paper."""
    metrics = list(result["metrics"])
    if not metrics:
        return None
    if result["protocol"] == "harness" and "acc_norm" in metrics:
        return "acc_norm"
    for preferred in ("exact_match,strict-match", "pass@1"):
        if preferred in metrics:
            return preferred
    return metrics[0]


def comparison_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown: our primary metric (%, ± stderr) next to the paper's numbers for every task we evaluated."""
    head = "| task | protocol | metric | shots | n | ours | " + " | ".join(f"paper {s}" for s in SIZES) + " |"
    lines = [head, "|" + "---|" * (6 + len(SIZES))]
    for task, res in results.items():
        metric = primary_metric(res)
        if metric is None:
            continue
        value, stderr = res["metrics"][metric]["value"], res["metrics"][metric]["stderr"]
        scale = 1.0 if "perplexity" in metric or metric in ("bits_per_byte", "likelihood_diff") else 100.0
        ours = f"{value * scale:.1f}" + (f" ± {stderr * scale:.1f}" if stderr is not None else "")
        paper = PAPER_RESULTS.get(task)
        cells = [f"{s:.1f}" for s in paper["scores"]] if paper else ["–"] * len(SIZES)
        lines.append(f"| {task} | {res['protocol']} | {metric} | {res['num_fewshot']} | {res['n']} | {ours} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)
