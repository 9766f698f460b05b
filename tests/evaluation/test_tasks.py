"""Task registry, data loading errors, and task-specific document handling."""

from __future__ import annotations

import json
import math
import string

import pytest

from evaluation.data import DataError, load_docs
from evaluation.runner import evaluate_task
from evaluation.tasks import GROUPS, REGISTRY, get_task, resolve_tasks
from evaluation.tasks.hellaswag import preprocess
from evaluation.tasks.race import group_by_article

from .conftest import EVAL_DATA

ISSUE_NAMES = {"boolq", "piqa", "social_iqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa",
               "race", "nq_open", "triviaqa", "gsm8k", "mmlu", "truthfulqa_mc1", "truthfulqa_mc2",
               "crows_pairs_english", "humaneval", "mbpp", "math", "winogender", "perplexity"}


def test_registry_names_and_groups():
    assert set(REGISTRY) == ISSUE_NAMES
    assert resolve_tasks("commonsense") == ["boolq", "piqa", "social_iqa", "hellaswag", "winogrande", "arc_easy",
                                            "arc_challenge", "openbookqa"]
    assert set(GROUPS["paper"]) <= ISSUE_NAMES and set(GROUPS["commonsense"]) < set(GROUPS["paper"])
    assert resolve_tasks("piqa,commonsense") [0] == "piqa" and len(resolve_tasks("piqa,commonsense")) == 8
    with pytest.raises(ValueError, match="Valid tasks: .*arc_challenge.*winogrande"):
        resolve_tasks("piqa,hellaswagg")
    with pytest.raises(ValueError, match="protocol"):
        get_task("piqa", "gpt3")


def test_missing_file_and_fields_are_named(tmp_path):
    with pytest.raises(DataError) as err:
        load_docs(get_task("piqa"), str(tmp_path))
    assert "'piqa'" in str(err.value) and "piqa.jsonl" in str(err.value) and "sol1" in str(err.value)
    (tmp_path / "piqa.jsonl").write_text(json.dumps({"goal": "g", "sol1": "a", "label": 0}) + "\n")
    with pytest.raises(DataError, match=r"'piqa'.*piqa.jsonl row 0 lacks field\(s\) \['sol2'\]"):
        load_docs(get_task("piqa"), str(tmp_path))
    (tmp_path / "gsm8k.jsonl").write_text(json.dumps({"question": "q", "answer": "#### 1"}) + "\n")
    with pytest.raises(DataError, match="gsm8k_train.jsonl"):  # 5 shots need the few-shot pool
        evaluate_task(None, "gsm8k", data_dir=str(tmp_path))


def test_hellaswag_preprocessing_hand_checked():
    assert preprocess(" Roof shingle removal: A man is [title] Remove  it. ") == "Roof shingle removal: A man is. Remove it."
    doc = {"activity_label": "Pole vault", "ctx_a": "A man runs.", "ctx_b": "THE man JUMPS", "endings": ["[header] x"],
           "label": "0"}
    processed = get_task("hellaswag").process_docs([doc])[0]
    assert processed["query"] == "Pole vault: A man runs. The man jumps" and processed["gold"] == 0


def test_race_question_rows_become_article_documents():
    rows = [{"article": "A", "question": "q1?", "options": ["a", "b", "c", "d"], "answer": "B"},
            {"article": "A", "question": "The sky is  _  .", "options": ["w", "x", "y", "z"], "answer": "C"},
            {"article": "B", "question": "q3", "options": ["1", "2", "3", "4"], "answer": "D"}]
    docs = group_by_article(rows)
    assert len(docs) == 2 and len(docs[0]["problems"]) == 2
    race = get_task("race")
    assert race.doc_to_text(docs[0]) == "Article: A\n\nQuestion: q1?\nAnswer: b\nThe sky is  _  ."
    assert race.gold(docs[0]) == 2 and race.choices(docs[1]) == ["1", "2", "3", "4"]
    assert len(get_task("race", "paper").process_docs(rows)) == 3  # the paper counts every question


def test_paper_prompts_differ_where_the_paper_says():
    doc = {"question": "who wrote hamlet", "answer": ["Shakespeare"]}
    shot = {"question": "capital of france", "answer": ["Paris"]}
    harness, paper = get_task("nq_open"), get_task("nq_open", "paper")
    assert harness.contexts(doc, [shot])[0] == "Answer these questions:\n\nQ: capital of france?\nA: Paris\nQ: who wrote hamlet?\nA:"
    assert paper.contexts(doc, [shot])[0] == "Answer these questions:\nQ: capital of france?\nA: Paris\nQ: who wrote hamlet?\nA:"
    assert "acc_answer" in get_task("openbookqa", "paper").metrics and "acc_answer" in get_task("boolq", "paper").metrics
    assert get_task("mmlu", "paper").num_fewshot == 5 and get_task("gsm8k", "paper").num_fewshot == 8


def test_paper_answer_rule_end_to_end(adapter, tmp_path):
    (tmp_path / "boolq.jsonl").write_text((EVAL_DATA / "boolq.jsonl").read_text().split("\n", 2)[0] + "\n")
    _, (sample,) = evaluate_task(adapter, "boolq", "paper", data_dir=str(tmp_path))
    uncond = [ll for ll, _ in adapter.loglikelihood([("Answer:", " no"), ("Answer:", " yes")])]
    assert sample["loglikelihoods_answer"] == pytest.approx(uncond)
    ratio = [a - b for a, b in zip(sample["loglikelihoods"], uncond)]
    assert sample["metrics"]["acc_answer"] == float(ratio.index(max(ratio)) == sample["target"])


def test_triviaqa_synthetic_hub_schema(adapter, tmp_path):
    # No TriviaQA fixture exists; two rows in the rc.nocontext schema (answer.aliases / normalized_aliases / value).
    rows = [{"question": "Which planet is known as the Red Planet?", "question_id": "q1",
             "answer": {"aliases": ["Mars", "Planet Mars"], "normalized_aliases": ["mars", "planet mars"],
                        "value": "Mars"}},
            {"question": "What is the capital of Italy?", "question_id": "q2",
             "answer": {"aliases": ["Rome"], "normalized_aliases": ["rome"], "value": "Rome"}}]
    (tmp_path / "triviaqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result, samples = evaluate_task(adapter, "triviaqa", data_dir=str(tmp_path))
    assert samples[0]["contexts"][0] == "Question: Which planet is known as the Red Planet??\nAnswer:"
    drop = str.maketrans("", "", string.punctuation)
    for s in samples:  # the score is exactly the match of the stripped completion against the aliases
        norm = s["completion"].strip().lower().translate(drop)
        assert s["metrics"]["exact_match"] == float(norm in [a.lower().translate(drop) for a in s["target"]])
    assert result["n"] == 2 and result["metrics"]["exact_match"]["value"] in (0.0, 0.5, 1.0)


def test_perplexity_from_a_text_file(adapter, tmp_path):
    (tmp_path / "perplexity.txt").write_text("First document, two lines.\nSecond line.\n\nSecond document here.\n")
    result, samples = evaluate_task(adapter, "perplexity", "paper", data_dir=str(tmp_path))
    texts = ["First document, two lines.\nSecond line.", "Second document here."]
    assert [s["target"] for s in samples] == texts
    lls = adapter.loglikelihood_rolling(texts, add_special_tokens=False)
    nbytes = sum(len(t.encode()) for t in texts)
    assert result["metrics"]["bits_per_byte"]["value"] == pytest.approx(-sum(lls) / nbytes / math.log(2))
    assert result["metrics"]["word_perplexity"]["value"] == pytest.approx(math.exp(-sum(lls) / (6 + 3)))
    harness, _ = evaluate_task(adapter, "perplexity", "harness", data_dir=str(tmp_path))
    assert harness["metrics"]["bits_per_byte"]["value"] != result["metrics"]["bits_per_byte"]["value"]  # BOS scored
