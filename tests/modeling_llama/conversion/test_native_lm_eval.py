"""lm-eval's own `--model hf` on the native export (no remote code, our package absent) gives the numbers of
`llama-paper eval --protocol harness` on our folder."""

from __future__ import annotations

import json

import pytest

from modeling_llama.cli import main
from modeling_llama.conversion.native import export_llama

from ...evaluation.test_harness_equivalence import local_mc_tasks
from .conftest import run_without_package

TASKS = ("piqa", "arc_easy")
LIMIT = 5


def test_lm_eval_hf_on_native_export_matches_llama_paper_eval(trained_dir, tmp_path, capsys):
    ours_data, yaml_dir, names = local_mc_tasks(TASKS, tmp_path)
    results = tmp_path / "results.json"
    argv = ["eval", "--model", str(trained_dir), "--tasks", ",".join(TASKS), "--protocol", "harness", "--limit",
            str(LIMIT), "--data-dir", str(ours_data), "--dtype", "float32", "--device", "cpu", "--output",
            str(results), "--no-progress"]
    assert main(argv) == 0
    ours = json.loads(results.read_text())["results"]
    native = export_llama(trained_dir, tmp_path / "native")
    script = f"""
import lm_eval
from lm_eval.tasks import TaskManager
out = lm_eval.simple_evaluate(model="hf", model_args="pretrained={native},dtype=float32", tasks={list(names.values())},
                              batch_size=4, device="cpu", limit={LIMIT},
                              task_manager=TaskManager(include_path={str(yaml_dir)!r}, include_defaults=False))
print(json.dumps(out["results"]))
"""
    theirs = run_without_package(script, tmp_path, timeout=600)
    for task in TASKS:
        mine, reference = ours[task], theirs[names[task]]
        assert mine["n"] == LIMIT and mine["protocol"] == "harness"
        for metric in ("acc", "acc_norm"):
            assert mine["metrics"][metric]["value"] == pytest.approx(reference[f"{metric},none"], abs=1e-9), task
            assert mine["metrics"][metric]["stderr"] == pytest.approx(reference[f"{metric}_stderr,none"], abs=1e-9)
