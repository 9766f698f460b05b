"""MMLU (Hendrycks et al. 2021): 57 subjects, four lettered options, answer letter scored.

Harness: lm-eval `mmlu` (cais/mmlu test; per-subject description; 0-shot by default; `first_n` shots from `dev`
of the same subject; the group score is the size-weighted mean = the mean over all documents). Paper: 5-shot
(the paper's Table 9 setting) with the same prompt; the continuations are single letters, so `acc` is the rule.
"""

from dataclasses import replace

from .base import DataSource, Task


def doc_to_text(doc: dict) -> str:
    """lm-eval's template: stripped question, `A. …` to `D. …`, then `Answer:`."""
    c = doc["choices"]
    return f"{doc['question'].strip()}\nA. {c[0]}\nB. {c[1]}\nC. {c[2]}\nD. {c[3]}\nAnswer:"


def description(doc: dict) -> str:
    """The per-subject header lm-eval puts before the shots."""
    return f"The following are multiple choice questions (with answers) about {doc['subject'].replace('_', ' ')}.\n\n"


HARNESS = Task(
    name="mmlu",
    source=DataSource("cais/mmlu", "all", "test", "mmlu.jsonl", ("question", "subject", "choices", "answer"),
                      "dev", "mmlu_dev.jsonl"),
    output_type="multiple_choice",
    description=description,
    doc_to_text=doc_to_text,
    doc_to_choice=lambda d: ["A", "B", "C", "D"],
    doc_to_target=lambda d: int(d["answer"]),
    fewshot_sampler="first_n",
    fewshot_pool_by=lambda d: d["subject"],
    metrics=("acc",),
)
PAPER = replace(HARNESS, protocol="paper", num_fewshot=5)
