"""Training metrics: `metrics.jsonl`, TensorBoard (an Accelerate tracker) and a progress bar, plus MFU.

One JSON object per logged step: step, loss, lr, grad_norm, tokens_per_s, mfu (null where the device's peak is
unknown, e.g. on CPU), tokens (seen so far over all processes), elapsed_s. Written by the main process only.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from tqdm.auto import tqdm

METRICS_FILE = "metrics.jsonl"


def model_flops_utilization(tokens_per_s: float, flops_per_token: float, peak_flops_per_device: float | None,
                            num_devices: int) -> float | None:
    """MFU = achieved model FLOP/s (flops_per_token incl. attention, times tokens/s) over the devices' peak."""
    if not peak_flops_per_device:
        return None
    return tokens_per_s * flops_per_token / (peak_flops_per_device * num_devices)


def read_metrics(path: str | Path) -> list[dict]:
    """All records of a metrics.jsonl (a torn last line from a killed run is ignored)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricsLogger:
    """Writes metrics on the main process; on resume keeps only the records up to the resumed step (both sinks)."""

    def __init__(self, accelerator, output_dir: str | Path, total_steps: int, start_step: int = 0,
                 use_tracker: bool = False, tracker_config: dict | None = None):
        self.accelerator = accelerator
        self.is_main = accelerator.is_main_process
        self.path = Path(output_dir) / METRICS_FILE
        self.use_tracker = use_tracker
        self.start = time.perf_counter()
        if use_tracker:
            # Flattened scalars only: TensorBoard's hparams accept int/float/str/bool.
            config = {k: v for k, v in (tracker_config or {}).items() if isinstance(v, (int, float, str, bool))}
            # On resume, TensorBoard hides the points an interrupted run logged after its checkpoint (purge_step:
            # events at steps >= it, in earlier event files of the folder), so the curve is not drawn twice.
            writer_kwargs = {"purge_step": start_step + 1} if start_step else {}
            accelerator.init_trackers("tensorboard", config=config, init_kwargs={"tensorboard": writer_kwargs})
        if self.is_main:
            # The tracker and this file are resumed from the checkpoint's step (never the other way round): drop
            # records the interrupted run wrote after its last checkpoint, they will be written again.
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= start_step]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self.bar = tqdm(total=total_steps, initial=start_step, disable=not self.is_main, desc="pretrain",
                        dynamic_ncols=True)

    def log(self, step: int, metrics: dict) -> None:
        """Record one step's metrics everywhere (main process)."""
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        record["elapsed_s"] = round(time.perf_counter() - self.start, 3)
        if self.use_tracker:
            self.accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"},
                                 step=step)
        if not self.is_main:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
        self.bar.set_postfix({k: f"{record[k]:.3g}" for k in ("loss", "lr", "grad_norm", "tokens_per_s")
                              if isinstance(record.get(k), (int, float))}, refresh=False)

    def advance(self, steps: int = 1) -> None:
        """Move the progress bar."""
        self.bar.update(steps)

    def close(self) -> None:
        """Close the bar and flush trackers."""
        self.bar.close()
        if self.use_tracker:  # not accelerator.end_training(): that also destroys the process group
            for tracker in self.accelerator.trackers:
                tracker.finish()
            self.use_tracker = False


def _plain(value):
    """JSON-friendly scalar: tensors to floats, NaN/inf to strings JSON can hold."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


__all__ = ["MetricsLogger", "model_flops_utilization", "read_metrics", "METRICS_FILE"]
