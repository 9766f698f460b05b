"""Registry of the paper's benchmarks (names as in lm-evaluation-harness) and the groups `paper` and `commonsense`."""

from __future__ import annotations

from . import (arc, boolq, crows_pairs_english, gsm8k, hellaswag, humaneval, math, mbpp, mmlu, nq_open, openbookqa,
               perplexity, piqa, race, social_iqa, triviaqa, truthfulqa, winogender, winogrande)
from .base import DataSource, Task

PROTOCOLS = ("harness", "paper")

# name -> (harness task, paper task)
REGISTRY: dict[str, tuple[Task, Task]] = {
    "boolq": (boolq.HARNESS, boolq.PAPER),
    "piqa": (piqa.HARNESS, piqa.PAPER),
    "social_iqa": (social_iqa.HARNESS, social_iqa.PAPER),
    "hellaswag": (hellaswag.HARNESS, hellaswag.PAPER),
    "winogrande": (winogrande.HARNESS, winogrande.PAPER),
    "arc_easy": (arc.HARNESS_EASY, arc.PAPER_EASY),
    "arc_challenge": (arc.HARNESS_CHALLENGE, arc.PAPER_CHALLENGE),
    "openbookqa": (openbookqa.HARNESS, openbookqa.PAPER),
    "race": (race.HARNESS, race.PAPER),
    "nq_open": (nq_open.HARNESS, nq_open.PAPER),
    "triviaqa": (triviaqa.HARNESS, triviaqa.PAPER),
    "gsm8k": (gsm8k.HARNESS, gsm8k.PAPER),
    "math": (math.HARNESS, math.PAPER),
    "mmlu": (mmlu.HARNESS, mmlu.PAPER),
    "truthfulqa_mc1": (truthfulqa.HARNESS_MC1, truthfulqa.PAPER_MC1),
    "truthfulqa_mc2": (truthfulqa.HARNESS_MC2, truthfulqa.PAPER_MC2),
    "crows_pairs_english": (crows_pairs_english.HARNESS, crows_pairs_english.PAPER),
    "winogender": (winogender.HARNESS, winogender.PAPER),
    "humaneval": (humaneval.HARNESS, humaneval.PAPER),
    "mbpp": (mbpp.HARNESS, mbpp.PAPER),
    "perplexity": (perplexity.HARNESS, perplexity.PAPER),
}

# Programs to run for the code tasks: (doc, completion) -> source.
PROGRAMS = {"humaneval": humaneval.program, "mbpp": mbpp.program}

GROUPS: dict[str, tuple[str, ...]] = {
    # Table 3 of the paper (zero-shot common sense reasoning).
    "commonsense": ("boolq", "piqa", "social_iqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
                    "openbookqa"),
}
GROUPS["paper"] = GROUPS["commonsense"] + (
    "nq_open", "triviaqa", "race", "mmlu", "gsm8k", "math", "humaneval", "mbpp", "truthfulqa_mc1", "truthfulqa_mc2",
    "crows_pairs_english", "winogender",
)


def resolve_tasks(spec: str | list[str]) -> list[str]:
    """Task names from `t1,t2` or group names, in order, without duplicates; unknown names list the valid ones."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for name in (n.strip() for n in names):
        if not name:
            continue
        expanded = GROUPS.get(name, (name,))
        for n in expanded:
            if n not in REGISTRY:
                raise ValueError(
                    f"Unknown task {n!r}. Valid tasks: {', '.join(sorted(REGISTRY))}; "
                    f"groups: {', '.join(sorted(GROUPS))}."
                )
            if n not in out:
                out.append(n)
    if not out:
        raise ValueError("No task given; pass --tasks with task or group names.")
    return out


def get_task(name: str, protocol: str = "harness") -> Task:
    """The task definition for one protocol ("harness" or "paper")."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}.")
    resolve_tasks([name])
    return REGISTRY[name][PROTOCOLS.index(protocol)]


__all__ = ["REGISTRY", "GROUPS", "PROGRAMS", "PROTOCOLS", "Task", "DataSource", "get_task", "resolve_tasks"]
