"""lm-evaluation-harness's own `--model hf` on our folder through remote code, in a Python where this package is
not importable, gives the numbers of `llama-paper eval --protocol harness` (same documents, same limit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from modeling_llama.cli import main as cli_main

from ..evaluation.test_harness_equivalence import _compare, local_mc_tasks

TASKS = ("piqa", "arc_easy")
LIMIT = 6
# lm-eval's own HF backend (`--model hf`), driven as its CLI does but indexing only our local YAMLs.
LM_EVAL = """
import json, sys
for name in ("modeling_llama", "evaluation", "training"):
    sys.modules[name] = None  # this package is "not installed": the model must come through remote code
import lm_eval
from lm_eval.tasks import TaskManager
folder, yaml_dir, tasks, limit, out = sys.argv[1:]
result = lm_eval.simple_evaluate(
    model="hf", model_args=f"pretrained={folder},dtype=float32,softmax_dtype=float32,trust_remote_code=True",
    tasks=tasks.split(","), batch_size=8, device="cpu", limit=int(limit), log_samples=True,
    task_manager=TaskManager(include_path=yaml_dir, include_defaults=False),
)
json.dump({"results": result["results"], "samples": result["samples"]}, open(out, "w"), default=str)
"""


def test_lm_eval_hf_with_remote_code_matches_llama_paper_eval(tiny_folder, tmp_path):
    ours, yaml_dir, names = local_mc_tasks(TASKS, tmp_path)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "datasets")}
    done = subprocess.run(
        [sys.executable, "-c", LM_EVAL, str(tiny_folder), str(yaml_dir), ",".join(names.values()), str(LIMIT),
         str(tmp_path / "lm_eval.json")],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert any((tmp_path / "modules").rglob("modeling_llama_paper.py"))  # the model code came from the folder
    theirs = json.loads((tmp_path / "lm_eval.json").read_text())

    assert cli_main(["eval", "--model", str(tiny_folder), "--tasks", ",".join(TASKS), "--protocol", "harness",
                     "--limit", str(LIMIT), "--data-dir", str(ours), "--device", "cpu", "--batch-size", "8",
                     "--no-progress", "--output", str(tmp_path / "results.json"),
                     "--log-samples", str(tmp_path / "samples.jsonl")]) == 0
    mine = json.loads((tmp_path / "results.json").read_text())["results"]
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    for task in TASKS:
        # Same prompts, same per-choice log-likelihoods, same decisions, document by document...
        _compare([s for s in samples if s["task"] == task], theirs["samples"][names[task]], task)
        for metric in ("acc", "acc_norm"):  # ...and the same aggregate numbers.
            ref = theirs["results"][names[task]]
            assert mine[task]["metrics"][metric]["value"] == pytest.approx(ref[f"{metric},none"], abs=1e-12)
            assert mine[task]["metrics"][metric]["stderr"] == pytest.approx(ref[f"{metric}_stderr,none"], abs=1e-12)
