"""MATH (Hendrycks et al. 2021): competition mathematics, answers in `\\boxed{}`.

Harness: lm-eval `hendrycks_math` (`Problem: {problem}\\nAnswer:`, 0-shot, stop at `Problem:`, the answer between the
first and last `$` of the completion compared with the solution's boxed answer after MATH normalization).
Paper: greedy exact match and maj1@k (paper k=256; `--num-samples`) with the same prompt and answer rule, sampled
at temperature 0.6 (Minerva's setting; the paper names none). The paper used Minerva's 4-shot prompt, which is not
reproduced here: this is our choice and shows in the shots column as 0.
"""

from dataclasses import replace

from ..math_answers import answer_from_completion, is_equiv, last_boxed_only_string, remove_boxed
from .base import DataSource, Task


SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
            "prealgebra", "precalculus")


def process_docs(docs: list[dict]) -> list[dict]:
    """Add `answer` (the boxed part of the solution)."""
    return [{**d, "answer": remove_boxed(last_boxed_only_string(d["solution"]))} for d in docs]


HARNESS = Task(
    name="math",
    source=DataSource("EleutherAI/hendrycks_math", SUBJECTS, "test", "math.jsonl", ("problem", "solution")),
    output_type="generate_until",
    process_docs=process_docs,
    doc_to_text=lambda d: f"Problem: {d['problem']}\nAnswer:",
    doc_to_target=lambda d: d["answer"],
    generation={"until": ["Problem:"], "do_sample": False, "temperature": 0.0},
    filters=(("none", answer_from_completion),),
    match=lambda answer, target: float(is_equiv(answer, target)),
    metrics=("exact_match",),
)
PAPER = replace(
    HARNESS, protocol="paper",
    generation={**HARNESS.generation, "maj_temperature": 0.6, "maj_k": 256},
    metrics=("exact_match", "maj1@k"),
)
