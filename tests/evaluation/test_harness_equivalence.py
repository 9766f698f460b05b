"""`--protocol harness` against lm-evaluation-harness 0.4.13 itself, on the fixture documents, with the tiny model.

lm-eval runs its *built-in* task YAMLs (each local YAML only `include:`s the installed one and swaps the dataset
for local JSON), in-process through `lm_eval.simple_evaluate` with `--model hf` on the saved model folder. For every
multiple-choice task we assert the same request strings, the same per-choice log-likelihoods (<= 1e-4 relative)
and the same per-document decisions/metrics; a second run checks few-shot prompts (mmlu first_n from dev,
arc_easy random shots, hellaswag random shots with the evaluated document excluded from its own pool), all in
one lm-eval call (few-shot counts set in the local YAMLs).
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest
import yaml

from evaluation.runner import evaluate_task

from .conftest import EVAL_DATA

LM_EVAL_TASKS = Path(__import__("lm_eval").__file__).parent / "tasks"

# our task -> (built-in YAML, our fixture file)
MC_TASKS = {
    "boolq": ("super_glue/boolq/default.yaml", "boolq.jsonl"),
    "piqa": ("piqa/piqa.yaml", "piqa.jsonl"),
    "social_iqa": ("siqa/siqa.yaml", "social_i_qa.jsonl"),
    "hellaswag": ("hellaswag/hellaswag.yaml", "hellaswag.jsonl"),
    "winogrande": ("winogrande/default.yaml", "winogrande.jsonl"),
    "arc_easy": ("arc/arc_easy.yaml", "arc_easy.jsonl"),
    "arc_challenge": ("arc/arc_challenge.yaml", "arc_challenge.jsonl"),
    "openbookqa": ("openbookqa/openbookqa.yaml", "openbookqa.jsonl"),
    "race": ("race/race.yaml", "race.jsonl"),
    "truthfulqa_mc1": ("truthfulqa/truthfulqa_mc1.yaml", "truthful_qa_mc.jsonl"),
    "truthfulqa_mc2": ("truthfulqa/truthfulqa_mc2.yaml", "truthful_qa_mc.jsonl"),
    "crows_pairs_english": ("crows_pairs/crows_pairs_english.yaml", "crows_pairs.jsonl"),
    "winogender": ("winogender/winogender.yaml", "winogender.jsonl"),
}
# Free-form tasks compared on prompts, greedy completions and filtered exact match (gsm8k: 5 random train shots).
GENERATION_TASKS = {"gsm8k": ("gsm8k/gsm8k.yaml", "gsm8k.jsonl", "test"),
                    "nq_open": ("nq_open/nq_open.yaml", "nq_open.jsonl", "validation")}
GENERATION_LIMIT = 2
MMLU_SUBJECTS = ("abstract_algebra", "anatomy", "astronomy", "high_school_geography", "us_foreign_policy")
LIMIT = 4
FEWSHOT_LIMIT = 3  # mmlu rows per subject
FEWSHOT = {"arc_easy": 2, "hellaswag": 2}
EVAL_SPLIT = {t: "test" for t in ("arc_easy", "arc_challenge", "openbookqa", "race", "crows_pairs_english",
                                  "winogender")}
METRIC_NAMES = {"mc2": "acc"}  # lm-eval calls truthfulqa_mc2's probability mass "acc"


def _rows(file: str) -> list[dict]:
    return [json.loads(line) for line in (EVAL_DATA / file).read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _lm_eval_rows(task: str, rows: list[dict]) -> list[dict]:
    """The same documents in the schema of the Hub dataset lm-eval's YAML reads."""
    if task == "boolq":  # google/boolq schema -> super_glue's integer label
        return [{**r, "label": int(r["answer"])} for r in rows]
    if task == "race":  # question rows -> EleutherAI/race article documents with a `problems` string
        out = []
        for article, group in itertools.groupby(rows, key=lambda r: r["article"]):
            problems = [{"question": r["question"], "options": r["options"], "answer": r["answer"]} for r in group]
            out.append({"article": article, "problems": str(problems)})
        return out
    return rows


def _local_yaml(folder: Path, name: str, builtin: str, data_files: dict[str, str], shots: int | None = None) -> str:
    local = f"local_{name}"
    # datasets' Arrow cache goes to the test's temporary folder, not the user's cache
    config = {"include": str(LM_EVAL_TASKS / builtin), "task": local, "dataset_path": "json", "dataset_name": None,
              "dataset_kwargs": {"data_files": data_files, "cache_dir": str(folder / "hf_datasets_cache")}}
    if shots is not None:
        config["num_fewshot"] = shots
    (folder / f"{local}.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return local


def local_mc_tasks(tasks: tuple[str, ...], tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """The fixture documents of multiple-choice `tasks` for both sides: (our --data-dir, lm-eval's YAML folder,
    {task: lm-eval's local task name}), lm-eval's copy in its Hub schema."""
    ours, lm_data, yaml_dir = tmp_path / "ours_data", tmp_path / "lm_data", tmp_path / "yaml"
    for folder in (ours, lm_data, yaml_dir):
        folder.mkdir()
    names = {}
    for task in tasks:
        builtin, file = MC_TASKS[task]
        shutil.copy(EVAL_DATA / file, ours / file)
        path = _write_jsonl(lm_data / file, _lm_eval_rows(task, _rows(file)))
        names[task] = _local_yaml(yaml_dir, task, builtin, {EVAL_SPLIT.get(task, "validation"): str(path),
                                                            "train": str(path)})
    return ours, yaml_dir, names


def _run_lm_eval(model_dir: Path, yaml_dir: Path, tasks: list[str], limit: int) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={model_dir},dtype=float32,softmax_dtype=float32", tasks=tasks,
        batch_size=8, device="cpu", limit=limit, bootstrap_iters=0, log_samples=True,
        task_manager=TaskManager(include_path=str(yaml_dir), include_defaults=False),
    )
    return out["samples"]


@pytest.fixture(scope="session")
def equivalence_setup(tmp_path_factory, tiny_model_dir):
    """Local data + YAMLs for lm-eval, our --data-dir, and lm-eval's samples for a 0-shot and a few-shot run."""
    root = tmp_path_factory.mktemp("harness-equivalence")
    lm_data, yaml_dir, ours = root / "lm_data", root / "yaml", root / "ours"
    for d in (lm_data, yaml_dir, ours):
        d.mkdir()
    names, fewshot_names = {}, {}
    for task, (builtin, file) in MC_TASKS.items():
        rows = _rows(file)
        shutil.copy(EVAL_DATA / file, ours / file)
        path = _write_jsonl(lm_data / f"{task}.jsonl", _lm_eval_rows(task, rows))
        split = EVAL_SPLIT.get(task, "validation")
        files = {split: str(path), "train": str(path)}  # lm-eval reads the training split when it builds a task
        names[task] = _local_yaml(yaml_dir, task, builtin, files)
        if task in FEWSHOT:
            # The few-shot pool ("train") is a copy of the evaluated file: for hellaswag (no test split) lm-eval
            # treats it as the evaluated split and drops the document from its own shots; arc_easy draws plainly.
            fewshot_names[task] = _local_yaml(yaml_dir, f"fewshot_{task}", builtin, files, FEWSHOT[task])
            shutil.copy(EVAL_DATA / file, ours / file.replace(".jsonl", "_train.jsonl"))
    test_rows, dev_rows = _rows("mmlu.jsonl"), _rows("mmlu_dev.jsonl")
    mmlu_names, ours_mmlu = [], []
    for subject in MMLU_SUBJECTS:
        test = [r for r in test_rows if r["subject"] == subject][:FEWSHOT_LIMIT]
        dev = [r for r in dev_rows if r["subject"] == subject]
        ours_mmlu += test
        files = {"test": str(_write_jsonl(lm_data / f"mmlu_{subject}.jsonl", test)),
                 "dev": str(_write_jsonl(lm_data / f"mmlu_{subject}_dev.jsonl", dev))}
        mmlu_names.append(_local_yaml(yaml_dir, f"mmlu_{subject}", f"mmlu/default/mmlu_{subject}.yaml", files, 5))
    _write_jsonl(ours / "mmlu.jsonl", ours_mmlu)
    shutil.copy(EVAL_DATA / "mmlu_dev.jsonl", ours / "mmlu_dev.jsonl")
    gen_names = {}
    for task, (builtin, file, split) in GENERATION_TASKS.items():
        rows = _rows(file)[:GENERATION_LIMIT]
        pool = _rows(file)[GENERATION_LIMIT:]  # the few-shot pool: other documents of the same file
        _write_jsonl(ours / file, rows)
        _write_jsonl(ours / file.replace(".jsonl", "_train.jsonl"), pool)
        files = {split: str(_write_jsonl(lm_data / file, rows)),
                 "train": str(_write_jsonl(lm_data / file.replace(".jsonl", "_train.jsonl"), pool))}
        gen_names[task] = _local_yaml(yaml_dir, task, builtin, files)
    tasks = list(names.values()) + list(fewshot_names.values()) + mmlu_names + list(gen_names.values())
    samples = _run_lm_eval(tiny_model_dir, yaml_dir, tasks, LIMIT)
    return {"ours": ours, "names": names, "fewshot_names": fewshot_names, "samples": samples,
            "mmlu_names": mmlu_names, "gen_names": gen_names}


def _request_args(sample: dict) -> list[tuple[str, str]]:
    args = sample["arguments"]
    if isinstance(args, dict):  # {"gen_args_0": {"arg_0": ctx, "arg_1": cont}, ...}
        args = [(a["arg_0"], a["arg_1"]) for a in args.values()]
    return [(str(a[0]), str(a[1])) for a in args]


def _lls(sample: dict) -> list[float]:
    return [float(r[0][0]) if isinstance(r[0], (list, tuple)) else float(r[0]) for r in sample["resps"]]


def _compare(ours_samples: list[dict], theirs: list[dict], task: str) -> None:
    theirs = sorted(theirs, key=lambda s: s["doc_id"])
    assert len(ours_samples) == len(theirs), task
    for mine, ref in zip(ours_samples, theirs):
        args = _request_args(ref)
        n = len(mine["loglikelihoods"])
        if len(mine["contexts"]) > 1:  # winogrande: one context per option, one continuation
            assert [(c, mine["continuations"][0]) for c in mine["contexts"]] == args, task
        else:
            assert [(mine["contexts"][0], k) for k in mine["continuations"]] == args, task
        ref_lls = _lls(ref)
        assert len(ref_lls) == n, task
        for a, b in zip(mine["loglikelihoods"], ref_lls):
            assert a == pytest.approx(b, rel=1e-4, abs=1e-5), (task, mine["doc_id"], a, b)
        scale = max(abs(x) for x in ref_lls)  # likelihood_diff is a difference of lls: their noise, not its own
        for metric, value in mine["metrics"].items():
            expected = float(ref[METRIC_NAMES.get(metric, metric)])
            assert value == pytest.approx(expected, rel=1e-4, abs=1e-4 * scale), (task, metric, mine["doc_id"])


@pytest.mark.parametrize("task", list(MC_TASKS))
def test_zero_shot_matches_lm_eval(task, equivalence_setup, adapter):
    setup = equivalence_setup
    _, samples = evaluate_task(adapter, task, "harness", limit=LIMIT, data_dir=str(setup["ours"]))
    _compare(samples, setup["samples"][setup["names"][task]], task)


@pytest.mark.parametrize("task", list(FEWSHOT))
def test_random_fewshot_matches_lm_eval(task, equivalence_setup, adapter):
    setup = equivalence_setup
    _, samples = evaluate_task(adapter, task, "harness", limit=LIMIT, num_fewshot=FEWSHOT[task],
                               data_dir=str(setup["ours"]))
    assert all("\n\n" in s["contexts"][0] for s in samples)  # the shots are really there
    _compare(samples, setup["samples"][setup["fewshot_names"][task]], task)


def test_mmlu_first_n_fewshot_matches_lm_eval(equivalence_setup, adapter):
    setup = equivalence_setup
    result, samples = evaluate_task(adapter, "mmlu", "harness", num_fewshot=5, data_dir=str(setup["ours"]))
    for i, name in enumerate(setup["mmlu_names"]):
        _compare(samples[i * FEWSHOT_LIMIT:(i + 1) * FEWSHOT_LIMIT], setup["samples"][name], name)
    assert result["num_fewshot"] == 5 and result["n"] == FEWSHOT_LIMIT * len(MMLU_SUBJECTS)


@pytest.mark.parametrize("task", list(GENERATION_TASKS))
def test_generation_prompts_and_completions_match_lm_eval(task, equivalence_setup, adapter):
    setup = equivalence_setup
    _, samples = evaluate_task(adapter, task, "harness", data_dir=str(setup["ours"]))
    theirs = sorted(setup["samples"][setup["gen_names"][task]], key=lambda s: s["doc_id"])
    for mine in samples:
        per_filter = [r for r in theirs if r["doc_id"] == mine["doc_id"]]
        assert per_filter, task
        args = per_filter[0]["arguments"]
        context = args["gen_args_0"]["arg_0"] if isinstance(args, dict) else args[0][0]
        assert mine["contexts"][0] == context
        assert mine["completion"] == per_filter[0]["resps"][0][0]
        for ref in per_filter:  # one lm-eval sample per filter
            name = ref.get("filter", "none")
            key = "exact_match" if len(per_filter) == 1 else f"exact_match,{name}"
            assert mine["prediction"][name] == ref["filtered_resps"][0]
            assert mine["metrics"][key] == float(ref["exact_match"])


def test_every_multiple_choice_task_is_covered():
    from evaluation.tasks import REGISTRY

    mc = {n for n, (h, _) in REGISTRY.items() if h.output_type == "multiple_choice"}
    assert mc == set(MC_TASKS) | {"mmlu"}
