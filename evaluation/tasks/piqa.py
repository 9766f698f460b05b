"""PIQA (Bisk et al. 2020): physical commonsense, two solutions per goal.

Harness: lm-eval `piqa` (`Question: {goal}\\nAnswer:`, acc/acc_norm). Paper: same prompt, `acc_char`.
"""

from dataclasses import replace

from .base import DataSource, Task

HARNESS = Task(
    name="piqa",
    source=DataSource("baber/piqa", None, "validation", "piqa.jsonl", ("goal", "sol1", "sol2", "label"),
                      "train", "piqa_train.jsonl"),
    output_type="multiple_choice",
    doc_to_text=lambda d: f"Question: {d['goal']}\nAnswer:",
    doc_to_choice=lambda d: [d["sol1"], d["sol2"]],
    doc_to_target=lambda d: int(d["label"]),
    fewshot_excludes_eval_doc=True,
    metrics=("acc", "acc_norm"),
)
PAPER = replace(HARNESS, protocol="paper", metrics=("acc_char", "acc"))
