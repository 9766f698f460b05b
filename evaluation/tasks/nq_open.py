"""Natural Questions open (Kwiatkowski et al. 2019; Lee et al. 2019): short-answer questions, greedy generation.

Harness: lm-eval `nq_open` (description `Answer these questions:\\n\\n`, `Q: {question}?\\nA:`, shots joined by
`\\n`, stop at newline/period/comma, exact match ignoring case, punctuation and articles, any answer counts).
Paper: the paper's Figure-style prompt `Answer these questions:\\nQ: …?\\nA: …` with 0/1/5/64 shots
(`--num-fewshot`, shots drawn from `nq_open_train.jsonl`), greedy, cut at the first line break / period / comma,
SQuAD-normalized exact match against any answer.
"""

from dataclasses import replace
from functools import partial

from ..answer_matching import exact_match_any, squad_match, strip_whitespace
from .base import DataSource, Task

UNTIL = ["\n", ".", ","]

HARNESS = Task(
    name="nq_open",
    source=DataSource("google-research-datasets/nq_open", None, "validation", "nq_open.jsonl",
                      ("question", "answer"), "train", "nq_open_train.jsonl"),
    output_type="generate_until",
    description="Answer these questions:\n\n",
    doc_to_text=lambda d: f"Q: {d['question']}?\nA:",
    doc_to_target=lambda d: list(d["answer"]),
    fewshot_delimiter="\n",
    fewshot_excludes_eval_doc=True,
    generation={"until": UNTIL, "do_sample": False, "temperature": 0.0},
    filters=(("remove_whitespace", strip_whitespace),),
    match=partial(exact_match_any, ignore_case=True, ignore_punctuation=True,
                  regexes_to_ignore=["\\b(?:The |the |An |A |The |a |an )"]),
    metrics=("exact_match",),
)
PAPER = replace(HARNESS, protocol="paper", description="Answer these questions:\n", match=squad_match)
