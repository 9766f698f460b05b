"""The model card (README.md): Hub metadata and a body rebuilt from the files in a model folder.

Inputs, all optional, all read as data files from the folder: `config.json`, `summary.json` (written by
`llama-paper pretrain`), `finetune_summary.json` (`llama-paper finetune`), `run_info.json`, `metrics.jsonl`,
`loss_curve.png`, and `eval_results.json` (every `llama-paper eval` results.json merged into the folder, one entry
per task x protocol x shots, the latest winning). Metadata uses huggingface_hub's `ModelCardData` / `EvalResult`, so
the `model-index` is the one the Hub parses; `validate_card` runs the same parser offline before anything is pushed.
Options given once (license, language, base model) live in the card's own metadata and survive later rebuilds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

CARD = "README.md"
RESULTS_FILE = "eval_results.json"
LOSS_PLOT = "loss_curve.png"
MARKER = "<!-- llama-paper card: rebuilt from this folder's files by `llama-paper push` / `eval --update-card` -->"
# Meta's LLaMA weights are not under an open licence: the Hub's convention is `license: other` + name + link, and
# the link points at the LICENSE file that must travel with the weights (push warns when it is missing).
META_LICENSE = {"license": "other", "license_name": "llama-license", "license_link": "LICENSE"}
PAPER_SIZES = ("7B", "13B", "33B", "65B")
KEPT_METADATA = ("license", "license_name", "license_link", "language", "base_model", "base_model_relation",
                 "thumbnail", "co2_eq_emissions")


# --- evaluation results ------------------------------------------------------------------------------------------
def load_report(path: str | Path) -> dict[str, Any]:
    """A `llama-paper eval` results.json; ValueError naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file {path} does not exist; pass the --output of `llama-paper eval`.")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not JSON ({err.msg}); pass the --output of `llama-paper eval`.") from None
    if not isinstance(report, dict) or not isinstance(report.get("results"), dict):
        raise ValueError(f"{path} has no 'results' mapping; pass the --output of `llama-paper eval`.")
    for task, res in report["results"].items():
        if not isinstance(res, dict) or not isinstance(res.get("metrics"), dict):
            raise ValueError(f"{path}: task {task!r} has no 'metrics' mapping.")
    return report


def merge_results(stored: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """Add a report's task results to the stored ones (key task/protocol/shots; the new result wins)."""
    merged = dict(stored)
    for task, res in report["results"].items():
        protocol = res.get("protocol", report.get("protocol", "harness"))
        entry = {**res, "task": task, "protocol": protocol, "model": report.get("model"),
                 "versions": report.get("versions")}
        merged[f"{task}/{protocol}/{res.get('num_fewshot', 0)}-shot"] = entry
    return merged


def primary_metric(res: dict[str, Any]) -> str | None:
    """The metric shown next to the paper's number: what `llama-paper eval` recorded, else the first one."""
    return res.get("primary_metric") or next(iter(res["metrics"]), None)


def eval_results(stored: dict[str, Any]) -> list:
    """huggingface_hub `EvalResult`s (one per task x metric) for the model-index."""
    from huggingface_hub import EvalResult

    out = []
    for res in stored.values():
        dataset = res.get("dataset") or {}
        for metric, m in res["metrics"].items():
            if not isinstance(m.get("value"), (int, float)):
                continue
            out.append(EvalResult(
                task_type="text-generation", task_name=res["task"],
                dataset_type=dataset.get("path") or res["task"], dataset_name=dataset.get("title") or res["task"],
                dataset_config=dataset.get("name"), dataset_split=dataset.get("split"),
                dataset_args={"num_few_shot": res.get("num_fewshot", 0)},
                metric_type=metric.split(",")[0], metric_name=f"{metric} ({res.get('num_fewshot', 0)}-shot, "
                                                             f"{res['protocol']} protocol)",
                metric_value=float(m["value"]), metric_args={"protocol": res["protocol"]},
            ))
    return out


def results_table(stored: dict[str, Any]) -> str:
    """Markdown: our primary metric (%, ± stderr) next to the paper's numbers (Touvron et al. 2023, Tables 3-7)."""
    head = "| task | protocol | metric | shots | n | ours | " + " | ".join(f"paper {s}" for s in PAPER_SIZES) + " |"
    lines = [head, "|" + "---|" * (6 + len(PAPER_SIZES))]
    for res in stored.values():
        metric = primary_metric(res)
        if metric is None:
            continue
        value, stderr = res["metrics"][metric].get("value"), res["metrics"][metric].get("stderr")
        scale = 1.0 if "perplexity" in metric or metric in ("bits_per_byte", "likelihood_diff") else 100.0
        ours = "–" if value is None else f"{value * scale:.1f}" + (
            f" ± {stderr * scale:.1f}" if isinstance(stderr, (int, float)) else "")
        paper = res.get("paper") or {}
        cells = [f"{s:.1f}" for s in paper.get("scores", ())] or ["–"] * len(PAPER_SIZES)
        lines.append(f"| {res['task']} | {res['protocol']} | {metric} | {res.get('num_fewshot', 0)} | "
                     f"{res.get('n', '')} | {ours} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- reading the folder ------------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}


def stored_results(folder: str | Path) -> dict[str, Any]:
    """The evaluation results merged into a folder so far (empty when none)."""
    return _read_json(Path(folder) / RESULTS_FILE)


def existing_metadata(folder: str | Path) -> dict[str, Any]:
    """The YAML metadata of the folder's current card ({} when there is none or it does not parse)."""
    from huggingface_hub import metadata_load

    path = Path(folder) / CARD
    try:
        return (metadata_load(path) or {}) if path.is_file() else {}
    except Exception:  # a broken header is rebuilt, not fatal
        return {}


def published_repo_id(folder: str | Path) -> str | None:
    """The Hub id a folder was pushed as (`llama-paper push` names the card, or its model-index, after it)."""
    meta = existing_metadata(folder)
    index = meta.get("model-index")
    name = index[0].get("name") if isinstance(index, list) and index and isinstance(index[0], dict) else \
        meta.get("model_name")
    return name if isinstance(name, str) and re.fullmatch(r"[\w.-]+/[\w.-]+", name) else None


def hub_datasets(summary: dict[str, Any]) -> list[str]:
    """The mixture's Hub dataset ids (`namespace/name`), in mixture order."""
    ids = []
    for source in (summary.get("mixture") or {}).values():
        dataset = source.get("dataset") if isinstance(source, dict) else None
        if isinstance(dataset, str) and re.fullmatch(r"[\w.-]+/[\w.-]+", dataset) and dataset not in ids:
            ids.append(dataset)
    return ids


# --- the card ----------------------------------------------------------------------------------------------------
def card_data(folder: str | Path, *, model_name: str, results: dict[str, Any], license: str | None = None,
              language: list[str] | None = None,
              base_model: str | None = None, base_model_relation: str | None = None):
    """`ModelCardData` for a folder: given options, else the current card's, else defaults; model-index from results."""
    from huggingface_hub import ModelCardData

    folder = Path(folder)
    old = existing_metadata(folder)
    summary = _read_json(folder / "summary.json")
    finetune = _read_json(folder / "finetune_summary.json")
    kept = {k: old[k] for k in KEPT_METADATA if old.get(k) is not None}
    if license == "meta-llama":
        kept.update(META_LICENSE)
    elif license:
        kept = {k: v for k, v in kept.items() if not k.startswith("license")} | {"license": license}
    if language:
        kept["language"] = language
    base_model = base_model or finetune.get("base_model_id")
    if base_model:
        kept.update(base_model=base_model, base_model_relation=base_model_relation or "finetune")
    kept.setdefault("language", ["en"])
    stage = "finetune" if finetune else ("pretraining" if summary else None)
    remote_code = "auto_map" in _read_json(folder / "config.json")
    # A kept card's tags are carried over, except `custom_code` where the folder has none (a native export's card
    # starts from the remote-code folder's card).
    old_tags = [t for t in old.get("tags") or [] if remote_code or t != "custom_code"]
    tags = list(dict.fromkeys(["llama", "llama-paper", "causal-lm"] + (["custom_code"] if remote_code else [])
                              + ([stage] if stage else []) + old_tags))
    datasets = hub_datasets(summary) or list(old.get("datasets") or []) or None
    if not results and old.get("model-index"):  # a hand-written model-index is kept (and checked: invalid raises)
        kept["model-index"] = old["model-index"]
    return ModelCardData(library_name="transformers", pipeline_tag="text-generation", tags=tags, datasets=datasets,
                         model_name=model_name, eval_results=eval_results(results) or None, **kept)


def card_body(folder: str | Path, model_name: str, results: dict[str, Any]) -> str:
    """The card's Markdown: what the model is, how to load it, its training, evaluation against the paper, files."""
    folder = Path(folder)
    summary = _read_json(folder / "summary.json")
    finetune = _read_json(folder / "finetune_summary.json")
    remote_code = "auto_map" in _read_json(folder / "config.json")
    parts = [MARKER, f"# {model_name}", "", _intro(summary, finetune), "", "## Use", _usage(model_name, remote_code),
             ""]
    if summary:
        parts += _pretraining_sections(summary, folder)
    if finetune:
        parts += _finetune_section(finetune, folder)
    if results:
        parts += ["## Evaluation", "Our primary metric for each task (% unless a perplexity; ± one standard error) "
                  "next to the LLaMA paper's published numbers for the four model sizes (Touvron et al. 2023, "
                  "Tables 3-7). Every metric is in the `model-index` above and in `eval_results.json`.", "",
                  results_table(results), ""]
    config = _read_json(folder / "config.json")
    if config and not summary:
        keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "vocab_size", "max_position_embeddings", "rms_norm_eps", "rope_theta")
        parts += ["## Model", _table([(k, config[k]) for k in keys if k in config], ("name", "value")), ""]
    files = [f for f in ("run_info.json", "metrics.jsonl", "summary.json", "finetune_summary.json", RESULTS_FILE)
             if (folder / f).is_file()]
    if files:
        parts += ["## Files", "Also in this repository: " + ", ".join(f"`{f}`" for f in files) + ".", ""]
    return "\n".join(parts)


def _intro(summary: dict, finetune: dict) -> str:
    if finetune:
        return (f"A LLaMA (Touvron et al. 2023) model fine-tuned with `llama-paper finetune` from "
                f"`{finetune.get('base_model', 'a base model')}`.")
    if summary:
        return ("A LLaMA (Touvron et al. 2023) decoder pre-trained from scratch with `llama-paper pretrain` (AdamW "
                "0.9/0.95, weight decay 0.1, linear warm-up then cosine to 10% of the peak learning rate, gradient "
                "clipping 1.0).")
    return "A LLaMA (Touvron et al. 2023) decoder in the `llama-paper` format (Hugging Face Transformers, remote code)."


def _usage(model_name: str, remote_code: bool) -> str:
    flag = ", trust_remote_code=True" if remote_code else ""
    text = ("```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'model = AutoModelForCausalLM.from_pretrained("{model_name}"{flag})\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{model_name}"{flag})\n```\n')
    if remote_code:
        return text + ("With the `llama-paper` package installed, `import modeling_llama` registers the classes and "
                       "`trust_remote_code` is not needed.")
    return text + "A transformers-native Llama folder (`LlamaForCausalLM`): no remote code is needed."


def _pretraining_sections(summary: dict, folder: Path) -> list[str]:
    run = summary.get("run_config", {})
    heldout, stats = summary.get("heldout", {}), summary.get("data_stats", {})
    hyper = [(k, run[k]) for k in ("model_preset", "seq_len", "micro_batch_size", "max_steps", "learning_rate",
                                   "min_lr_ratio", "weight_decay", "adam_beta1", "adam_beta2", "max_grad_norm",
                                   "mixed_precision", "activation_checkpointing", "seed", "vocab_size") if k in run]
    hyper += [("warm-up steps", summary.get("warmup_steps")), ("gradient accumulation", summary.get("accumulation")),
              ("tokens per optimizer step", summary.get("tokens_per_step"))]
    info = summary.get("run_info", {})
    parts = [
        "## Training",
        f"Parameters: {summary.get('parameters', 0):,}. Optimizer steps: {summary.get('steps')}. Tokens seen: "
        f"{summary.get('tokens_seen', 0):,}. Wall time: {summary.get('wall_time_s', 0):.0f} s on "
        f"{info.get('world_size', 1)} process(es) ({info.get('distributed_type', 'NO')}).", "",
        "### Hyper-parameters", _table(hyper, ("name", "value")), "",
        "### Model", "```json\n" + json.dumps(summary.get("model_config", {}), indent=1, sort_keys=True) + "\n```", "",
        "### Data mixture",
        _table([(name, _fmt(src.get("weight")), src.get("dataset") or "", stats.get(name, {}).get("documents", ""),
                 stats.get(name, {}).get("tokens", ""),
                 ("~" if stats.get(name, {}).get("epochs_estimated") else "") + _fmt(stats.get(name, {}).get("epochs")))
                for name, src in summary.get("mixture", {}).items()],
               ("source", "sampling weight", "dataset", "documents seen", "tokens seen", "epochs")), "",
        "### Final losses", f"Final training loss (last logged step): {_fmt(summary.get('final_train_loss'))}.", "",
        _table([(name, _fmt(r.get("loss")), _fmt(r.get("perplexity")), _fmt(r.get("bits_per_byte")),
                 _fmt(r.get("unigram_loss")), r.get("tokens")) for name, r in heldout.items()],
               ("held-out source", "loss (nats/token)", "perplexity", "bits per byte", "unigram loss", "tokens")), "",
    ]
    if (folder / LOSS_PLOT).is_file():
        parts += ["### Loss curve", f"![training loss]({LOSS_PLOT})", ""]
    if summary.get("sample"):
        parts += ["### Sample", "```text", summary["sample"], "```", ""]
    return parts


def _finetune_section(finetune: dict, folder: Path) -> list[str]:
    hyper = sorted((k, v) for k, v in (finetune.get("hyperparameters") or {}).items())
    parts = ["## Fine-tuning", f"Data: `{finetune.get('data', '')}`. Optimizer steps: {finetune.get('steps')}. "
             f"Final training loss: {_fmt(finetune.get('train_loss'))}.", "", _table(hyper, ("name", "value")), ""]
    if (folder / LOSS_PLOT).is_file():
        parts += [f"![training loss]({LOSS_PLOT})", ""]
    return parts


def _table(rows: list[tuple], header: tuple) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def build_card(folder: str | Path, *, model_name: str | None = None, results: dict[str, Any] | None = None,
               **options: Any):
    """The folder's `ModelCard` (metadata + body); results default to the folder's eval_results.json; options:
    license, language, base_model, base_model_relation.

    A card that `llama-paper` did not write (no marker line) keeps its body; only its metadata is updated.
    """
    from huggingface_hub import ModelCard

    folder = Path(folder)
    model_name = model_name or existing_metadata(folder).get("model_name") or folder.resolve().name
    results = stored_results(folder) if results is None else results
    data = card_data(folder, model_name=model_name, results=results, **options)
    current = (folder / CARD).read_text(encoding="utf-8") if (folder / CARD).is_file() else ""
    body = card_body(folder, model_name, results)
    if current and MARKER not in current:
        body = ModelCard(current, ignore_metadata_errors=True).text
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def validate_card(text: str, repo_type: str = "model") -> list[str]:
    """What the Hub would refuse in a README's metadata, found offline with huggingface_hub's own parser."""
    from huggingface_hub import DatasetCard, ModelCard, SpaceCard

    card_class = {"model": ModelCard, "dataset": DatasetCard, "space": SpaceCard}.get(repo_type, ModelCard)
    try:
        card = card_class(text)
    except Exception as err:  # ValueError for a bad model-index, yaml errors for a broken header
        return [f'"metadata" {err}'.strip()]
    data = card.data.to_dict()
    if data.get("license") == "other" and not data.get("license_name"):
        return ['"license_name" is required when "license" is "other"']
    return []


def write_card(folder: str | Path, *, results: Iterable[str | Path] = (), model_name: str | None = None,
               **options: Any) -> Path:
    """Merge `results` files into the folder's eval_results.json, rebuild README.md and check it; returns its path."""
    folder = Path(folder)
    stored = stored_results(folder)
    for path in results:
        stored = merge_results(stored, load_report(path))
    card = build_card(folder, model_name=model_name, results=stored, **options)
    errors = validate_card(str(card))
    if errors:
        raise ValueError(f"the model card built for {folder} is invalid: " + "; ".join(errors))
    if stored:
        (folder / RESULTS_FILE).write_text(json.dumps(stored, indent=1, default=str) + "\n", encoding="utf-8")
    (folder / CARD).write_text(str(card), encoding="utf-8")
    return folder / CARD


__all__ = ["CARD", "RESULTS_FILE", "LOSS_PLOT", "META_LICENSE", "build_card", "write_card", "validate_card",
           "load_report", "merge_results", "published_repo_id", "eval_results", "results_table", "stored_results",
           "hub_datasets"]
