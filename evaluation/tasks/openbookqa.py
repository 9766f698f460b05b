"""OpenBookQA (Mihaylov et al. 2018): elementary science, test split, the bare question stem as prompt.

Harness: lm-eval `openbookqa` (acc/acc_norm). Paper: same prompt, decided by `P(c|ctx) / P(c|"Answer:")`
(`acc_answer`), the rule the paper names for OpenBookQA and BoolQ.
"""

from dataclasses import replace

from .base import DataSource, Task

HARNESS = Task(
    name="openbookqa",
    source=DataSource("allenai/openbookqa", "main", "test", "openbookqa.jsonl",
                      ("question_stem", "choices", "answerKey"), "train", "openbookqa_train.jsonl"),
    output_type="multiple_choice",
    doc_to_text=lambda d: d["question_stem"],
    doc_to_choice=lambda d: list(d["choices"]["text"]),
    doc_to_target=lambda d: list(d["choices"]["label"]).index(d["answerKey"].lstrip()),
    metrics=("acc", "acc_norm"),
)
PAPER = replace(HARNESS, protocol="paper", metrics=("acc_answer", "acc_char", "acc"))
