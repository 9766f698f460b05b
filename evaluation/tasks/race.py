"""RACE (Lai et al. 2017): reading comprehension of English exams.

Harness: lm-eval `race` (EleutherAI/race `high`, test): one document per *article*; the prompt is the article, the
article's earlier questions with their answers, then the last question, whose options are scored (acc).
Question-level rows (ehovy/race schema: article/question/options/answer) are grouped by consecutive article into
that structure. Paper: the paper reports RACE-middle and RACE-high per question; lm-eval's prompt is kept with a
single question per document, decided by `acc_char` (the paper gives no prompt; this is our choice).
"""

import ast
from dataclasses import replace

from .base import DataSource, Task

LETTER = {"A": 0, "B": 1, "C": 2, "D": 3}


def _problems(doc: dict) -> list[dict]:
    problems = doc["problems"]
    return ast.literal_eval(problems) if isinstance(problems, str) else list(problems)


def _answer_option(problem: dict) -> str:
    return problem["options"][LETTER[problem["answer"]]]


def group_by_article(docs: list[dict]) -> list[dict]:
    """Question-level rows → article-level documents with a `problems` list (kept as-is if already grouped)."""
    out: list[dict] = []
    for doc in docs:
        if "problems" in doc:
            out.append(doc)
            continue
        missing = [f for f in ("question", "options", "answer") if f not in doc]
        if missing:
            raise ValueError(f"task 'race': a row lacks {missing}; rows need article + problems, or article + "
                             "question/options/answer (ehovy/race schema).")
        problem = {"question": doc["question"], "options": list(doc["options"]), "answer": doc["answer"]}
        if out and out[-1]["article"] == doc["article"] and out[-1].get("_grouped"):
            out[-1]["problems"].append(problem)
        else:
            out.append({"article": doc["article"], "problems": [problem], "_grouped": True})
    return out


def one_question_per_doc(docs: list[dict]) -> list[dict]:
    """Every question its own document (the paper's per-question accuracy)."""
    out = []
    for doc in group_by_article(docs):
        for p in _problems(doc):
            out.append({"article": doc["article"], "problems": [p]})
    return out


def doc_to_text(doc: dict) -> str:
    """lm-eval `preprocess_race.doc_to_text`: article, earlier Q/A pairs (cloze ones filled in), last question."""
    problems = _problems(doc)
    text = "Article: " + doc["article"] + "\n\n"
    for problem in problems[:-1]:
        if problem["question"][-6:] == "  _  .":
            text += problem["question"][:-5] + _answer_option(problem) + "\n"
        else:
            text += "Question: " + problem["question"] + "\n" + "Answer: " + _answer_option(problem) + "\n"
    return text + problems[-1]["question"]


HARNESS = Task(
    name="race",
    source=DataSource("EleutherAI/race", "high", "test", "race.jsonl", ("article",)),
    output_type="multiple_choice",
    process_docs=group_by_article,
    doc_to_text=doc_to_text,
    doc_to_choice=lambda d: [_problems(d)[-1]["options"][i] for i in range(4)],
    doc_to_target=lambda d: LETTER[_problems(d)[-1]["answer"]],
    metrics=("acc",),
)
PAPER = replace(HARNESS, protocol="paper", process_docs=one_question_per_doc, metrics=("acc_char", "acc"))
