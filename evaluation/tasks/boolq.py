"""BoolQ (Clark et al. 2019): yes/no questions about a Wikipedia passage.

Harness: lm-eval `boolq` (super_glue; `{passage}\\nQuestion: {question}?\\nAnswer:`, choices no/yes, acc only).
Paper: same prompt; the decision is `P(c|ctx) / P(c|"Answer:")` (Brown et al. 2020), reported as `acc_answer`.
Accepts both the super_glue schema (`label`) and google/boolq's (`answer`: bool).
"""

from dataclasses import replace

from .base import DataSource, Task


def _label(doc: dict) -> int:
    return int(doc["label"]) if "label" in doc else int(bool(doc["answer"]))


HARNESS = Task(
    name="boolq",
    source=DataSource("aps/super_glue", "boolq", "validation", "boolq.jsonl", ("passage", "question"),
                      "train", "boolq_train.jsonl"),
    output_type="multiple_choice",
    doc_to_text=lambda d: f"{d['passage']}\nQuestion: {d['question']}?\nAnswer:",
    doc_to_choice=lambda d: ["no", "yes"],
    doc_to_target=_label,
    fewshot_excludes_eval_doc=True,  # lm-eval: no test split, so fewshot_split (None) == test_split
    metrics=("acc",),
)
PAPER = replace(HARNESS, protocol="paper", metrics=("acc_answer", "acc"))
