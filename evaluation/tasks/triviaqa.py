"""TriviaQA (Joshi et al. 2017), no-context: trivia questions, greedy generation, any alias counts.

Harness: lm-eval `triviaqa` (rc.nocontext validation; `Question: {question}?\\nAnswer:` — questions already end in
`?`, so the prompt has `??` exactly as in lm-eval; exact match ignoring case and punctuation against the aliases).
Paper: `Answer these questions:\\nQ: {question}\\nA:` with 0/1/5/64 shots, SQuAD-normalized exact match against
the aliases; the paper's "filtered dev" set is not public as such, so the rc.nocontext validation split is used.
No fixture ships (no copy with the Hub answer structure was reachable); the tests use a small synthetic file.
"""

from dataclasses import replace
from functools import partial

from ..answer_matching import exact_match_any, squad_match, strip_whitespace
from .base import DataSource, Task

HARNESS = Task(
    name="triviaqa",
    source=DataSource("mandarjoshi/trivia_qa", "rc.nocontext", "validation", "triviaqa.jsonl",
                      ("question", "answer"), "train", "triviaqa_train.jsonl"),
    output_type="generate_until",
    doc_to_text=lambda d: f"Question: {d['question']}?\nAnswer:",
    doc_to_target=lambda d: list(d["answer"]["aliases"]),
    fewshot_excludes_eval_doc=True,
    generation={"until": ["\n", ".", ","], "do_sample": False, "temperature": 0.0},
    filters=(("remove_whitespace", strip_whitespace),),
    match=partial(exact_match_any, ignore_case=True, ignore_punctuation=True),
    metrics=("exact_match",),
)
PAPER = replace(HARNESS, protocol="paper", description="Answer these questions:\n",
                doc_to_text=lambda d: f"Q: {d['question']}\nA:", fewshot_delimiter="\n", match=squad_match)
