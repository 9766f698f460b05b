"""Free-form and code tasks through the runner with a scripted model: maj1@k and pass@k from known samples."""

from __future__ import annotations

import json
from math import comb

import pytest

from evaluation.runner import evaluate_task

from .conftest import EVAL_DATA


class ScriptedModel:
    """Stands in for the adapter: answers generate_until from a function of (prompt, kwargs)."""

    def __init__(self, reply):
        self.reply = reply
        self.calls = []

    def generate_until(self, requests):
        self.calls.extend(requests)
        return [self.reply(p, kw) for p, kw in requests]


def _first_rows(tmp_path, file, n):
    rows = (EVAL_DATA / file).read_text().splitlines()[:n]
    (tmp_path / file).write_text("\n".join(rows) + "\n")
    return [json.loads(r) for r in rows]


def test_gsm8k_paper_greedy_and_maj1_at_k(tmp_path):
    docs = _first_rows(tmp_path, "gsm8k.jsonl", 2)
    gold = [d["answer"].split("####")[-1].strip() for d in docs]

    def reply(prompt, kw):
        right = gold[0] if docs[0]["question"] in prompt else gold[1]
        if kw.get("n", 1) == 1:  # greedy: wrong for both documents
            return ["So it is 999999. The answer is 999999."]
        # 5 samples: doc 0 has the right answer in 3 of 5, doc 1 in 2 of 5 (a wrong answer wins the vote)
        k = 3 if right == gold[0] else 2
        return [f"The answer is {right}."] * k + ["The answer is 1."] * (5 - k)

    model = ScriptedModel(reply)
    result, samples = evaluate_task(model, "gsm8k", "paper", data_dir=str(tmp_path), num_samples=5)
    assert [s["metrics"]["maj1@k"] for s in samples] == [1.0, 0.0]
    assert result["metrics"]["exact_match,strict-match"]["value"] == 0.0 and result["num_fewshot"] == 8
    sampled = [kw for _, kw in model.calls if kw.get("n", 1) > 1]
    assert all(kw["temperature"] == 0.6 and kw["do_sample"] for kw in sampled)
    assert model.calls[0][0].startswith("Q: There are 15 trees in the grove.")  # the 8 chain-of-thought exemplars


def test_humaneval_harness_pass_at_1_runs_the_programs(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")
    docs = _first_rows(tmp_path, "humaneval.jsonl", 2)
    solutions = {d["prompt"]: d["canonical_solution"] for d in docs}
    model = ScriptedModel(lambda p, kw: [solutions[p] if p == docs[0]["prompt"] else "    return None\n"])
    result, samples = evaluate_task(model, "humaneval", data_dir=str(tmp_path))
    assert [s["metrics"]["pass@1"] for s in samples] == [1.0, 0.0]
    assert model.calls[0][1]["max_gen_toks"] == 1024 and "\ndef" in model.calls[0][1]["until"]


def test_mbpp_paper_pass_at_k_uses_the_unbiased_estimator(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")
    (doc,) = _first_rows(tmp_path, "mbpp.jsonl", 1)
    n, good = 6, 2

    def reply(prompt, kw):
        assert prompt.count("[BEGIN]") == 4 and prompt.endswith("[BEGIN]\n")  # 3 shots + the task
        return [doc["code"]] * good + ["def nothing():\n    pass\n"] * (n - good)

    result, (sample,) = evaluate_task(ScriptedModel(reply), "mbpp", "paper", data_dir=str(tmp_path), num_samples=n)
    assert sample["passed"]["T=0.1"] == [True] * good + [False] * (n - good)
    assert sample["metrics"]["pass@1"] == pytest.approx(good / n)
    assert "pass@80" not in sample["metrics"]  # needs >= 80 samples
    result2, (s2,) = evaluate_task(ScriptedModel(lambda p, kw: [doc["code"]] * 3 + ["x = ("] * 97), "mbpp", "paper",
                                   data_dir=str(tmp_path), num_samples=100)
    assert s2["metrics"]["pass@80"] == pytest.approx(1 - comb(97, 80) / comb(100, 80))
