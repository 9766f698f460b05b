"""Checkpoints in torch.distributed.checkpoint (DCP) format, written synchronously or in the background.

Used by tensor-parallel runs (whose DTensor model Accelerate's `save_state` cannot save) and by runs with
`async_checkpoint: true` (FSDP2, TP, or a single process). Layout of `OUTPUT/checkpoint-<step>/`:
  model_optimizer/      DCP files: every rank's model and optimizer shards ({"model": ..., "optim": ...}, keys as
                        in `get_state_dict`), reloadable on any mesh, consolidated by `llama-paper pretrain
                        --consolidate` like the other engines' checkpoints
  rng_state_<rank>.safetensors   each process's torch RNG state
  trainer_state.json, config.json, tokenizer/   as for every checkpoint (training/checkpointing.py)

Asynchronous saves (torchtitan's recipe): the state is staged (copied to CPU memory) by a background thread while the
next forward/backward runs (the optimizer step waits for the copy: `wait_for_staging`), then written by another
over a separate gloo process group, so the training collectives never wait for disk. The folder is written as
`.tmp-checkpoint-<step>` and renamed to `checkpoint-<step>` only once DCP's coordinator (rank 0) has written its
`.metadata`, i.e. after every rank's files are complete; a run killed during the save leaves the previous checkpoint
as the latest. The next save, the end of the run and a stop signal wait for
the pending save (`wait`).
"""

from __future__ import annotations

import json
import shutil
import threading
import warnings
from pathlib import Path

import torch

from .checkpointing import CHECKPOINT_PREFIX, TEMP_PREFIX, TRAINER_STATE, discard, list_checkpoints, write_run_files

# A single-process run saves with no_dist=True on purpose; DCP warns about it on every save (also from the writer
# thread, where a catch_warnings block would not reach).
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized",
                        category=UserWarning)

DCP_FOLDER = "model_optimizer"
RNG_FILE = "rng_state_{rank}.safetensors"


def is_dcp_checkpoint(checkpoint: str | Path) -> bool:
    """Whether `checkpoint` was written by this module."""
    return (Path(checkpoint) / DCP_FOLDER / ".metadata").is_file()


class DistributedCheckpointer:
    """Save and load a run's model, optimizer and RNG states with DCP; `async_save=True` writes in the background."""

    def __init__(self, accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer, async_save: bool):
        import torch.distributed as dist

        self.accelerator, self.model, self.optimizer, self.async_save = accelerator, model, optimizer, async_save
        self.distributed = dist.is_available() and dist.is_initialized()
        # Background writes use their own gloo group: their collectives never queue behind the training ones.
        self.group = dist.new_group(backend="gloo") if async_save and self.distributed else None
        self._pending = None  # (future, publish) of the save in flight
        self._staging = None  # completes once the state of the save in flight is copied to CPU memory
        self._stager = None
        if async_save:
            from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions
            # The copy to CPU memory runs in a thread too (torchtitan's async_with_pinned_mem): the next forward and
            # backward overlap it, and only the next optimizer step, which changes the state, waits for it
            # (`wait_for_staging`). Its CPU buffers are kept from one save to the next (allocating and faulting in a
            # fresh copy of the whole state each time was most of the blocked time); reuse is safe because a save
            # first waits for the previous one. Pinned on a GPU host, for fast device-to-host copies.
            self._stager = DefaultStager(StagingOptions(use_pinned_memory=torch.cuda.is_available(),
                                                        use_shared_memory=False, use_async_staging=True,
                                                        use_non_blocking_copy=False))
        self._lock = threading.Lock()

    # --- saving -------------------------------------------------------------------------------------------------
    def save(self, output_dir: str | Path, step: int, trainer_state: dict, keep: int, model_config=None,
             tokenizer_dir: str | Path | None = None) -> Path:
        """Start writing checkpoint-<step> (collective); returns its final path (complete once published)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        self.wait()
        output_dir = Path(output_dir)
        temp, final = output_dir / f"{TEMP_PREFIX}{step}", output_dir / f"{CHECKPOINT_PREFIX}{step}"
        accelerator = self.accelerator
        if accelerator.is_main_process and temp.exists():
            shutil.rmtree(temp)  # left by a run killed while saving
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            temp.mkdir(parents=True)
            write_run_files(temp, {**trainer_state, "step": step}, model_config, tokenizer_dir)
        accelerator.wait_for_everyone()
        _save_rng_state(temp / RNG_FILE.format(rank=accelerator.process_index))
        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        state = {"model": model_state, "optim": optim_state}
        checkpoint_id = str(temp / DCP_FOLDER)
        no_dist = not self.distributed

        def publish() -> None:  # rank 0, once DCP's metadata (written last, by rank 0) exists
            with self._lock:
                if not temp.exists():
                    return
                if final.exists():
                    discard(final)
                temp.rename(final)
                for _, old in list_checkpoints(output_dir)[:-keep]:
                    discard(old)

        if self.async_save:
            response = dcp.async_save(state, checkpoint_id=checkpoint_id, process_group=self.group, no_dist=no_dist,
                                      async_stager=self._stager)
            self._staging, future = response.staging_completion, response.upload_completion
            if accelerator.is_main_process:
                # Published from the writer thread as soon as it is done: training need not reach a wait for it.
                future.add_done_callback(lambda f: f.exception() is None and publish())
            self._pending = (future, publish if accelerator.is_main_process else None)
        else:
            dcp.save(state, checkpoint_id=checkpoint_id, no_dist=no_dist)
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                publish()
            accelerator.wait_for_everyone()
        return final

    def wait_for_staging(self) -> None:
        """Block until the save in flight has copied the state (call before anything changes it: optimizer.step)."""
        if self._staging is not None:
            self._staging.result()
            self._staging = None

    def wait(self) -> None:
        """Block until the save in flight (if any) is written and published on every process (collective)."""
        self.wait_for_staging()
        if self._pending is None:
            return
        future, publish = self._pending
        self._pending = None
        future.result()  # re-raises a failed background write here, in the training thread
        if publish is not None:
            publish()  # idempotent: the done-callback may have published already
        self.accelerator.wait_for_everyone()

    # --- loading ------------------------------------------------------------------------------------------------
    def load(self, checkpoint: str | Path) -> dict:
        """Restore model, optimizer and this process's RNG state from `checkpoint` (collective); its trainer state."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        checkpoint = Path(checkpoint)
        state = json.loads((checkpoint / TRAINER_STATE).read_text())
        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        loaded = {"model": model_state, "optim": optim_state}
        dcp.load(loaded, checkpoint_id=str(checkpoint / DCP_FOLDER), no_dist=not self.distributed)
        set_state_dict(self.model, self.optimizer, model_state_dict=loaded["model"],
                       optim_state_dict=loaded["optim"])
        rng = checkpoint / RNG_FILE.format(rank=self.accelerator.process_index)
        if rng.is_file():
            _load_rng_state(rng)
        return state


def _save_rng_state(path: Path) -> None:
    from safetensors.torch import save_file
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    save_file(states, str(path))


def _load_rng_state(path: Path) -> None:
    from safetensors.torch import load_file
    states = load_file(str(path))
    torch.set_rng_state(states["cpu"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


def full_model_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights as plain CPU tensors on the main process (collective; {} elsewhere)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


__all__ = ["DistributedCheckpointer", "is_dcp_checkpoint", "full_model_state_dict", "DCP_FOLDER"]
