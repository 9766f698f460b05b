"""`llama-paper eval` end to end: results.json, samples.jsonl, the comparison table and error messages."""

from __future__ import annotations

import json

from modeling_llama.cli import main

from .conftest import EVAL_DATA


def test_eval_writes_results_samples_and_table(tiny_model_dir, tmp_path, capsys):
    out, samples_path = tmp_path / "results.json", tmp_path / "samples.jsonl"
    code = main(["eval", "--model", str(tiny_model_dir), "--tasks", "piqa,winogrande", "--protocol", "paper",
                 "--limit", "3", "--data-dir", str(EVAL_DATA), "--batch-size", "4", "--device", "cpu",
                 "--output", str(out), "--log-samples", str(samples_path), "--no-progress"])
    assert code == 0
    report = json.loads(out.read_text())
    piqa = report["results"]["piqa"]
    assert piqa["protocol"] == "paper" and piqa["n"] == 3 and piqa["num_fewshot"] == 0 and piqa["wall_time_s"] > 0
    assert set(piqa["metrics"]) == {"acc_char", "acc"} and piqa["metrics"]["acc"]["stderr"] is not None
    assert report["model"] == str(tiny_model_dir)
    assert {"torch", "transformers", "llama_paper"} <= set(report["versions"])
    lines = [json.loads(line) for line in samples_path.read_text().splitlines()]
    expected_ids = [("piqa", i) for i in range(3)] + [("winogrande", i) for i in range(3)]
    assert [(s["task"], s["doc_id"]) for s in lines] == expected_ids
    first = lines[0]
    lls = first["loglikelihoods"]
    assert len(lls) == 2 and first["prediction"] == lls.index(max(lls))
    assert first["target"] == json.loads((EVAL_DATA / "piqa.jsonl").read_text().splitlines()[0])["label"]
    assert len(lines[3]["contexts"]) == 2 and len(lines[3]["loglikelihoods"]) == 2  # winogrande: one per option
    table = capsys.readouterr().out
    assert "| piqa | paper | acc_char | 0 | 3 |" in table and "79.8" in table and "70.1" in table


def test_eval_rejects_unknown_tasks(tiny_model_dir, tmp_path, capsys):
    code = main(["eval", "--model", str(tiny_model_dir), "--tasks", "piqa,nope", "--output", str(tmp_path / "r.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert "Unknown task 'nope'" in err and "hellaswag" in err and not (tmp_path / "r.json").exists()


def test_code_tasks_need_opt_in(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HF_ALLOW_CODE_EVAL", raising=False)
    code = main(["eval", "--model", str(tiny_model_dir), "--tasks", "mbpp", "--data-dir", str(EVAL_DATA),
                 "--output", str(tmp_path / "r.json"), "--no-progress"])
    assert code == 2 and "--allow-code-execution" in capsys.readouterr().err


def test_launched_processes_get_the_same_flags_back():
    """`--num-processes N` relaunches `python -m evaluation` with _argv(args): every flag must parse back the same
    (a --no-compile once became `--compile False`)."""
    from evaluation.cli import _argv, build_parser

    for flags in (["--no-compile"], ["--compile"], ["--cache", "c", "--limit", "3", "--no-progress"]):
        args = build_parser().parse_args(["--model", "m", "--tasks", "piqa", "--output", "o.json", *flags])
        again = build_parser().parse_args(_argv(args, ("func",)))
        assert vars(again) == vars(args)
