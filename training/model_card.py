"""The final folder's model card (README.md) and its loss-curve plot."""

from __future__ import annotations

import json
from pathlib import Path

LOSS_PLOT = "loss_curve.png"


def plot_loss_curve(records: list[dict], path: str | Path, title: str = "Training loss") -> Path:
    """Plot loss (and lr on a second axis) against step from metrics.jsonl records into a PNG."""
    import matplotlib
    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt

    points = [(r["step"], r["loss"], r.get("lr")) for r in records if isinstance(r.get("loss"), (int, float))]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if points:
        steps, losses, lrs = zip(*points)
        ax.plot(steps, losses, color="tab:blue", label="train loss")
        if all(isinstance(v, (int, float)) for v in lrs):
            lr_ax = ax.twinx()
            lr_ax.plot(steps, lrs, color="tab:orange", alpha=0.6, label="learning rate")
            lr_ax.set_ylabel("learning rate")
        fig.legend(loc="upper right", bbox_to_anchor=(0.85, 0.88), fontsize="small")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _table(rows: list[tuple], header: tuple) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_model_card(summary: dict) -> str:
    """Markdown model card from a run summary (keys: run_config, model_config, parameters, mixture, data_stats,
    final_train_loss, heldout, tokens_seen, steps, wall_time_s, run_info, sample)."""
    run = summary.get("run_config", {})
    heldout = summary.get("heldout", {})
    stats = summary.get("data_stats", {})
    hyper = [(k, run[k]) for k in ("model_preset", "seq_len", "micro_batch_size", "max_steps", "learning_rate",
                                   "min_lr_ratio", "weight_decay", "adam_beta1", "adam_beta2", "max_grad_norm",
                                   "mixed_precision", "activation_checkpointing", "seed", "vocab_size") if k in run]
    hyper += [("warm-up steps", summary.get("warmup_steps")), ("gradient accumulation", summary.get("accumulation")),
              ("tokens per optimizer step", summary.get("tokens_per_step"))]
    parts = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags: [llama-paper, llama, causal-lm, pretraining]",
        "---",
        f"# {summary.get('name', 'llama-paper model')}",
        "",
        "A LLaMA (Touvron et al. 2023) decoder pre-trained from scratch with `llama-paper pretrain` (AdamW 0.9/0.95, "
        "weight decay 0.1, linear warm-up then cosine to 10% of the peak learning rate, gradient clipping 1.0). "
        "Load it with `import modeling_llama` and `AutoModelForCausalLM.from_pretrained(folder)`, or with "
        "`trust_remote_code=True` where the package is not installed.",
        "",
        f"Parameters: {summary.get('parameters', 0):,}. Optimizer steps: {summary.get('steps')}. Tokens seen: "
        f"{summary.get('tokens_seen', 0):,}. Wall time: {summary.get('wall_time_s', 0):.0f} s on "
        f"{summary.get('run_info', {}).get('world_size', 1)} process(es) "
        f"({summary.get('run_info', {}).get('distributed_type', 'NO')}).",
        "",
        "## Hyper-parameters",
        _table(hyper, ("name", "value")),
        "",
        "## Model",
        "```json\n" + json.dumps(summary.get("model_config", {}), indent=1, sort_keys=True) + "\n```",
        "",
        "## Data mixture",
        _table([(name, f"{src.get('weight', '')}", stats.get(name, {}).get("documents", ""),
                 stats.get(name, {}).get("tokens", ""),
                 ("~" if stats.get(name, {}).get("epochs_estimated") else "") + _fmt(stats.get(name, {}).get("epochs")))
                for name, src in summary.get("mixture", {}).items()],
               ("source", "sampling weight", "documents seen", "tokens seen", "epochs")),
        "",
        "## Final losses",
        f"Final training loss (last logged step): {_fmt(summary.get('final_train_loss'))}.",
        "",
        _table([(name, _fmt(r.get("loss")), _fmt(r.get("perplexity")), _fmt(r.get("bits_per_byte")),
                 _fmt(r.get("unigram_loss")), r.get("tokens"))
                for name, r in heldout.items()],
               ("held-out source", "loss (nats/token)", "perplexity", "bits per byte", "unigram loss", "tokens")),
        "",
        "## Loss curve",
        f"![training loss]({LOSS_PLOT})",
        "",
    ]
    if summary.get("sample"):
        parts += ["## Sample", "```text", summary["sample"], "```", ""]
    return "\n".join(parts)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def write_model_card(output_dir: str | Path, summary: dict, records: list[dict]) -> Path:
    """Write README.md and loss_curve.png into `output_dir`; returns the README path."""
    output_dir = Path(output_dir)
    plot_loss_curve(records, output_dir / LOSS_PLOT, title=f"{summary.get('name', 'llama-paper')}: training loss")
    readme = output_dir / "README.md"
    readme.write_text(render_model_card(summary))
    return readme


__all__ = ["write_model_card", "render_model_card", "plot_loss_curve", "LOSS_PLOT"]
