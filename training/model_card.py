"""The final folder's loss-curve plot and model card (README.md; built by `publishing.card` from the folder's files)."""

from __future__ import annotations

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


def write_model_card(output_dir: str | Path, summary: dict, records: list[dict]) -> Path:
    """Write loss_curve.png into `output_dir`, then rebuild its README.md from the folder's files (summary.json,
    run_info.json, the plot, eval results); returns the README path."""
    from publishing.card import write_card

    output_dir = Path(output_dir)
    plot_loss_curve(records, output_dir / LOSS_PLOT, title=f"{summary.get('name', 'llama-paper')}: training loss")
    return write_card(output_dir, model_name=summary.get("name"))


__all__ = ["write_model_card", "plot_loss_curve", "LOSS_PLOT"]
