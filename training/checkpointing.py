"""Checkpoints: atomic save every N steps, keep the last K, exact resume, graceful SIGTERM/SIGINT, consolidation.

Layout of `OUTPUT/checkpoint-<step>/`: everything `accelerator.save_state` writes for the active engine (model,
optimizer, RNG states of every process; DeepSpeed's ZeRO partitions or FSDP's sharded DCP files), plus
`trainer_state.json` (step, scheduler, data-stream position, counters: the single source of truth for resuming;
never `metrics.jsonl`), the model `config.json`, and the tokenizer. A checkpoint is written to
`.tmp-checkpoint-<step>` and renamed once every process has finished writing, so a folder named
`checkpoint-<step>` is always complete, whenever the run is killed.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import time
from pathlib import Path

import torch
from safetensors import SafetensorError

CHECKPOINT_PREFIX = "checkpoint-"
TEMP_PREFIX = ".tmp-checkpoint-"
ABANDONED_PREFIX = "abandoned-checkpoint-"
TRAINER_STATE = "trainer_state.json"
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")
# What a run leaves in its output folder besides checkpoints; config.json marks a final (or any other) model there.
RUN_ARTIFACTS = ("tokenizer", "data", "tensorboard", "metrics.jsonl", "run_info.json", "summary.json", "config.json")
# How damaged checkpoint files fail to load: missing files, bad JSON, truncated zip/pickle/safetensors.
_DAMAGED = (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError, SafetensorError)


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in `output_dir`, oldest first."""
    output_dir = Path(output_dir)
    found = []
    if output_dir.is_dir():
        for child in output_dir.iterdir():
            match = _CHECKPOINT_RE.match(child.name)
            if match and (child / TRAINER_STATE).is_file():
                found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else None


def earlier_run(output_dir: str | Path) -> list[Path]:
    """What an earlier run (or another model) left in `output_dir`: checkpoints, even incomplete, and artifacts."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    return sorted(child for child in output_dir.iterdir()
                  if child.name in RUN_ARTIFACTS
                  or child.name.startswith((CHECKPOINT_PREFIX, TEMP_PREFIX, ABANDONED_PREFIX)))


def remove_paths(paths: list[Path]) -> None:
    """Delete files and folders (an earlier run's leftovers, on --overwrite)."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def save_checkpoint(accelerator, output_dir: str | Path, step: int, trainer_state: dict, keep: int,
                    model_config=None, tokenizer_dir: str | Path | None = None) -> Path:
    """Write checkpoint-<step> atomically on all processes (collective); prune to the newest `keep`."""
    output_dir = Path(output_dir)
    temp = output_dir / f"{TEMP_PREFIX}{step}"
    final = output_dir / f"{CHECKPOINT_PREFIX}{step}"
    if accelerator.is_main_process and temp.exists():
        shutil.rmtree(temp)  # left by a run killed while saving
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temp), safe_serialization=True)
    if accelerator.is_main_process:
        write_run_files(temp, {**trainer_state, "step": step}, model_config, tokenizer_dir)
    # Every rank must have written its RNG/optimizer shard before the folder becomes visible under its final name.
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            discard(final)
        temp.rename(final)
        for _, old in list_checkpoints(output_dir)[:-keep]:
            discard(old)
    accelerator.wait_for_everyone()
    return final


def write_run_files(folder: Path, trainer_state: dict, model_config=None,
                    tokenizer_dir: str | Path | None = None) -> None:
    """What every checkpoint holds beside the engine's state: trainer_state.json, config.json, tokenizer/."""
    (folder / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=1) + "\n")
    if model_config is not None:
        model_config.save_pretrained(folder)
    if tokenizer_dir is not None:
        shutil.copytree(tokenizer_dir, folder / "tokenizer")


def discard(checkpoint: Path) -> None:
    """Delete a checkpoint folder so that no kill can leave a half-deleted one that still looks complete.

    It is renamed away from `checkpoint-<step>` first (a rename is atomic), then removed; a kill during the removal
    leaves a `.tmp-` folder that resume ignores and --overwrite clears.
    """
    trash = checkpoint.with_name(f"{TEMP_PREFIX}discarded-{checkpoint.name}")
    if trash.exists():
        shutil.rmtree(trash)
    checkpoint.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def set_aside_newer(output_dir: str | Path, step: int) -> list[Path]:
    """Rename the checkpoints newer than `step` (an abandoned continuation) to `abandoned-checkpoint-<n>`.

    Resuming from an older checkpoint starts a new future: left in place, the old newer checkpoints would outlive
    the new ones in keep-K pruning and a later `--resume latest` would jump back onto the abandoned run.
    """
    moved = []
    for number, path in list_checkpoints(output_dir):
        if number > step:
            target = path.with_name(f"{ABANDONED_PREFIX}{number}")
            if target.exists():
                shutil.rmtree(target)
            path.rename(target)
            moved.append(target)
    return moved


def load_checkpoint(accelerator, checkpoint_dir: str | Path) -> dict:
    """Restore model/optimizer/RNG from `checkpoint_dir` (collective) and return its trainer state."""
    checkpoint_dir = Path(checkpoint_dir)
    state_file = checkpoint_dir / TRAINER_STATE
    if not state_file.is_file():
        raise FileNotFoundError(f"{checkpoint_dir} is not a complete checkpoint (no {TRAINER_STATE}); "
                                f"resume from one of the checkpoint-<step> folders instead.")
    try:
        state = json.loads(state_file.read_text())  # read first: a damaged state must not half-restore the model
        accelerator.load_state(str(checkpoint_dir))
    except _DAMAGED as error:
        raise ValueError(f"Cannot resume from {checkpoint_dir}: its files are damaged or incomplete "
                         f"({type(error).__name__}: {error}). Resume from an earlier checkpoint with --resume "
                         f"{checkpoint_dir.parent}/checkpoint-<step>, or start afresh with --overwrite.") from error
    return state


def resolve_resume(resume: str | bool | None, output_dir: str | Path) -> Path | None:
    """--resume: True/"latest"/"auto" = newest checkpoint in output_dir (None if there is none), or a path."""
    if not resume:
        return None
    if resume is True or str(resume).lower() in ("latest", "auto", "true"):
        return latest_checkpoint(output_dir)
    path = Path(resume)
    if not (path / TRAINER_STATE).is_file():
        raise FileNotFoundError(f"--resume {path}: not a checkpoint folder (no {TRAINER_STATE}); pass a "
                                f"checkpoint-<step> folder or --resume latest.")
    return path


class GracefulStop:
    """SIGTERM/SIGINT set `requested` instead of killing; the loop saves a checkpoint and exits. A second signal kills.

    The loop reduces the flag over processes with the step's other scalars, so that all ranks stop at the same step.
    Under `accelerate launch` (torchrun) a Ctrl-C reaches each worker twice, from the terminal and forwarded by the
    launcher, milliseconds apart: a repeat within `REPEAT_GRACE_S` is that same stop, not a second request, and must
    not interrupt the checkpoint being written.
    """

    REPEAT_GRACE_S = 2.0

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)):
        self.requested: str | None = None
        self._first_at = 0.0
        self._previous = {}
        for sig in signals:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a test runner thread): signals cannot be caught there
                pass

    def _handle(self, signum, frame) -> None:
        now = time.monotonic()
        if self.requested is None:
            self.requested, self._first_at = signal.Signals(signum).name, now
            return
        if now - self._first_at < self.REPEAT_GRACE_S:
            return
        # A deliberate second signal acts as it would have without us (KeyboardInterrupt, or termination).
        previous = self._previous.get(signum, signal.SIG_DFL)
        signal.signal(signum, previous)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            os.kill(os.getpid(), signum)

    def restore(self) -> None:
        """Put the previous handlers back."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def consolidated_state_dict(checkpoint_dir: str | Path) -> dict[str, torch.Tensor]:
    """The full (unsharded) model state dict of any checkpoint: plain, DeepSpeed ZeRO-1/2/3, FSDP2 or TP (DCP)."""
    checkpoint_dir = Path(checkpoint_dir)
    if (checkpoint_dir / "model.safetensors").is_file():
        from safetensors.torch import load_file
        return load_file(checkpoint_dir / "model.safetensors")
    if (checkpoint_dir / "pytorch_model").is_dir():  # DeepSpeed engine checkpoint (accelerate's tag)
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
        return dict(get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag="pytorch_model"))
    dcp_dirs = sorted(checkpoint_dir.glob("model_optimizer")) or sorted(checkpoint_dir.glob("pytorch_model_fsdp_*"))
    if dcp_dirs and dcp_dirs[0].is_dir():  # FSDP sharded state dict, torch.distributed.checkpoint format
        from torch.distributed.checkpoint import FileSystemReader
        from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
        from torch.distributed.checkpoint.state_dict_loader import _load_state_dict
        state: dict = {}
        # Only the model's entries: a TP/async checkpoint (training.distributed_checkpoint) also holds the optimizer.
        _load_state_dict(state, storage_reader=FileSystemReader(str(dcp_dirs[0])),
                         planner=_EmptyStateDictLoadPlanner(keys={"model"}), no_dist=True)
        return state.get("model", state)
    raise FileNotFoundError(f"No model weights found in {checkpoint_dir} (expected model.safetensors, a DeepSpeed "
                            f"'pytorch_model' folder, an FSDP 'pytorch_model_fsdp_0' folder or a DCP "
                            f"'model_optimizer' folder).")


def consolidate_checkpoint(checkpoint_dir: str | Path, output_dir: str | Path, max_shard_size: str = "5GB") -> Path:
    """Turn a (possibly sharded) checkpoint into a normal Hugging Face folder that `from_pretrained` loads."""
    import modeling_llama  # noqa: F401  (registers the model with the Auto classes)
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    checkpoint_dir, output_dir = Path(checkpoint_dir), Path(output_dir)
    if not (checkpoint_dir / "config.json").is_file():  # else transformers takes the path for a Hub id
        raise FileNotFoundError(f"--consolidate {checkpoint_dir}: not a checkpoint folder (no config.json); pass an "
                                f"OUTPUT/checkpoint-<step> folder written by llama-paper pretrain.")
    config = AutoConfig.from_pretrained(checkpoint_dir)
    model = AutoModelForCausalLM.from_config(config)
    state = consolidated_state_dict(checkpoint_dir)
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    model.save_pretrained(output_dir, max_shard_size=max_shard_size)
    if (checkpoint_dir / "tokenizer").is_dir():
        AutoTokenizer.from_pretrained(checkpoint_dir / "tokenizer").save_pretrained(output_dir)
    return output_dir


__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "list_checkpoints", "resolve_resume",
           "GracefulStop", "consolidated_state_dict", "consolidate_checkpoint", "earlier_run", "remove_paths",
           "TRAINER_STATE"]
