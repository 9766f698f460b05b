"""HellaSwag (Zellers et al. 2019): pick the most plausible ending of an ActivityNet/WikiHow context.

Harness: lm-eval `hellaswag` (validation, `utils.preprocess`, acc/acc_norm). Paper: same prompt, decided by the
character-normalized likelihood (`acc_char`; the paper's rule, = lm-eval acc_norm, leading space not counted).
"""

import re
from dataclasses import replace

from .base import DataSource, Task


def preprocess(text: str) -> str:
    """lm-eval's clean-up: strip, WikiHow `[title]` → '. ', drop other [tags], one pass of double-space removal."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def process_docs(docs: list[dict]) -> list[dict]:
    """Add `query`, `choices`, `gold` as lm-eval's `process_docs` does (note `capitalize()` lower-cases ctx_b's tail)."""
    out = []
    for doc in docs:
        ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
        out.append({**doc, "query": preprocess(doc["activity_label"] + ": " + ctx),
                    "choices": [preprocess(e) for e in doc["endings"]], "gold": int(doc["label"])})
    return out


HARNESS = Task(
    name="hellaswag",
    source=DataSource("Rowan/hellaswag", None, "validation", "hellaswag.jsonl",
                      ("activity_label", "ctx_a", "ctx_b", "endings", "label"), "train", "hellaswag_train.jsonl"),
    output_type="multiple_choice",
    process_docs=process_docs,
    doc_to_text=lambda d: d["query"],
    doc_to_choice=lambda d: d["choices"],
    doc_to_target=lambda d: d["gold"],
    fewshot_excludes_eval_doc=True,  # lm-eval: fewshot_split (None) == test_split (None)
    metrics=("acc", "acc_norm"),
)
PAPER = replace(HARNESS, protocol="paper", metrics=("acc_char", "acc"))
