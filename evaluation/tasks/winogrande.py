"""WinoGrande (Sakaguchi et al. 2019): fill the blank with one of two options.

Harness: lm-eval `winogrande` partial scoring: each option fills the blank to make a context; the shared text after
the blank is the one scored continuation. Paper: the same partial scoring (one continuation, so the character
normalization cannot change the decision); reported as `acc`.
"""

from dataclasses import replace

from .base import DataSource, Task


def doc_to_text(doc: dict) -> int:
    """Index of the correct option ("1"/"2" → 0/1)."""
    return {"1": 0, "2": 1}[str(doc["answer"])]


def doc_to_target(doc: dict) -> str:
    """The text after the blank."""
    idx = doc["sentence"].index("_") + 1
    return doc["sentence"][idx:].strip()


def doc_to_choice(doc: dict) -> list[str]:
    """The sentence up to the blank, filled with each option."""
    idx = doc["sentence"].index("_")
    return [doc["sentence"][:idx] + opt for opt in (doc["option1"], doc["option2"])]


HARNESS = Task(
    name="winogrande",
    source=DataSource("allenai/winogrande", "winogrande_xl", "validation", "winogrande.jsonl",
                      ("sentence", "option1", "option2", "answer"), "train", "winogrande_train.jsonl"),
    output_type="multiple_choice",
    multiple_input=True,
    doc_to_text=doc_to_text,
    doc_to_choice=doc_to_choice,
    doc_to_target=doc_to_target,
    fewshot_excludes_eval_doc=True,  # lm-eval: no test split, so fewshot_split (None) == test_split
    metrics=("acc",),
)
PAPER = replace(HARNESS, protocol="paper")
