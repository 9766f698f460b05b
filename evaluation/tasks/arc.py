"""ARC easy/challenge (Clark et al. 2018): grade-school science questions, test split.

Harness: lm-eval `arc_easy`/`arc_challenge` (`Question: {question}\\nAnswer:`, labels may be A-D or 1-4).
Paper: same prompt, `acc_char`.
"""

from dataclasses import replace

from .base import DataSource, Task


def _task(name: str, config: str) -> Task:
    return Task(
        name=name,
        source=DataSource("allenai/ai2_arc", config, "test", f"{name}.jsonl", ("question", "choices", "answerKey"),
                          "train", f"{name}_train.jsonl"),
        output_type="multiple_choice",
        doc_to_text=lambda d: f"Question: {d['question']}\nAnswer:",
        doc_to_choice=lambda d: list(d["choices"]["text"]),
        doc_to_target=lambda d: list(d["choices"]["label"]).index(d["answerKey"]),
        metrics=("acc", "acc_norm"),
    )


HARNESS_EASY = _task("arc_easy", "ARC-Easy")
HARNESS_CHALLENGE = _task("arc_challenge", "ARC-Challenge")
PAPER_EASY = replace(HARNESS_EASY, protocol="paper", metrics=("acc_char", "acc"))
PAPER_CHALLENGE = replace(HARNESS_CHALLENGE, protocol="paper", metrics=("acc_char", "acc"))
