"""The Accelerator factory: one code path for single process, DDP, DeepSpeed ZeRO and FSDP2, on GPU and on CPU.

Accelerate 1.15 silently falls back to undistributed runs on CPU in several modes (see the project's notes on
distributed CPU runs). The fixes applied here are no-ops on GPU or without a launcher:
  * DeepSpeed: create `PartialState(backend="gloo")` first, otherwise every rank believes it is rank 0 of 1;
  * FSDP: build a CPU/gloo `PartialState` and relabel it MULTI_GPU, because Accelerate only turns FSDP on from a
    MULTI_GPU-like state (this relies on accelerate internals: keep accelerate pinned and keep the assertion);
  * DDP: `Accelerator(cpu=True)` under a torchrun-style launch (a MULTI_CPU accelerate config starts ONE process).
Every run then asserts that its world size and distributed type are the ones the launcher configured.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState, PartialState
from accelerate.utils import DistributedType, ProjectConfiguration


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


def configured_distribution() -> dict:
    """What the launcher asked for, read from its environment: distributed type, world size, ZeRO stage."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if _env_flag("ACCELERATE_USE_DEEPSPEED"):
        kind = DistributedType.DEEPSPEED
    elif _env_flag("ACCELERATE_USE_FSDP"):
        kind = DistributedType.FSDP
    elif world_size > 1:
        kind = DistributedType.MULTI_GPU if torch.cuda.is_available() else DistributedType.MULTI_CPU
    else:
        kind = DistributedType.NO
    zero_stage = _configured_zero_stage() if kind == DistributedType.DEEPSPEED else None
    return {"distributed_type": kind, "world_size": world_size, "zero_stage": zero_stage}


def fsdp_loads_from_rank0() -> bool:
    """Whether the launcher asked FSDP to build the weights on rank 0 only (`fsdp_cpu_ram_efficient_loading`):
    Accelerate then broadcasts rank 0's weights into every process's shards while preparing the model."""
    return _env_flag("ACCELERATE_USE_FSDP") and _env_flag("FSDP_CPU_RAM_EFFICIENT_LOADING")


def _configured_zero_stage() -> int:
    """The ZeRO stage the launcher asked for: `zero_stage` of the accelerate config, else the stage in its
    `deepspeed_config_file` (accelerate exports only the file's path then), else Accelerate's default, 2."""
    if "ACCELERATE_DEEPSPEED_ZERO_STAGE" in os.environ:
        return int(os.environ["ACCELERATE_DEEPSPEED_ZERO_STAGE"])
    config_file = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if config_file:
        try:
            config = json.loads(Path(config_file).read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"Cannot read the DeepSpeed config file {config_file} named by the accelerate config "
                             f"({type(error).__name__}: {error}); fix deepspeed_config_file there.") from None
        return int(config.get("zero_optimization", {}).get("stage", 0))  # DeepSpeed's own default is stage 0
    return 2


def build_accelerator(gradient_accumulation_steps: int = 1, mixed_precision: str = "no", micro_batch_size: int = 1,
                      max_grad_norm: float = 1.0, project_dir: str | None = None,
                      log_with: list[str] | None = None) -> Accelerator:
    """An Accelerator that really is distributed the way the launcher configured it (asserted)."""
    expected = configured_distribution()
    kind = expected["distributed_type"]
    # Our values win over the accelerate config file's: the DeepSpeed plugin reads these at construction.
    os.environ["ACCELERATE_GRADIENT_ACCUMULATION_STEPS"] = str(gradient_accumulation_steps)
    os.environ["ACCELERATE_GRADIENT_CLIPPING"] = str(max_grad_norm)
    launcher_precision = os.environ.get("ACCELERATE_MIXED_PRECISION")  # set by `accelerate launch` from its config
    if launcher_precision and launcher_precision != mixed_precision:
        warnings.warn(f"The accelerate config asks for mixed_precision={launcher_precision}, the run config for "
                      f"{mixed_precision}; using {mixed_precision}. Set `mixed_precision: {launcher_precision}` in the "
                      f"run config (or --mixed-precision {launcher_precision}) to use the launcher's.",
                      UserWarning, stacklevel=2)
    # A fresh state per run (tests build several runs in one process; a launched job builds exactly one).
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    cpu_only = not torch.cuda.is_available()
    kwargs = dict(gradient_accumulation_steps=gradient_accumulation_steps, mixed_precision=mixed_precision,
                  project_config=ProjectConfiguration(project_dir=project_dir, logging_dir=project_dir),
                  log_with=log_with, step_scheduler_with_optimizer=False)
    if cpu_only and kind == DistributedType.DEEPSPEED:
        PartialState(backend="gloo")
        accelerator = Accelerator(**kwargs)
    elif cpu_only and kind == DistributedType.FSDP:
        PartialState(cpu=True)
        PartialState._shared_state["distributed_type"] = DistributedType.MULTI_GPU
        accelerator = Accelerator(cpu=True, **kwargs)
    elif cpu_only:
        accelerator = Accelerator(cpu=True, **kwargs)
    else:
        accelerator = Accelerator(**kwargs)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        # Without a prepared dataloader DeepSpeed cannot infer its micro-batch; give it ours.
        ds_config = accelerator.state.deepspeed_plugin.deepspeed_config
        ds_config["train_micro_batch_size_per_gpu"] = micro_batch_size
        ds_config["gradient_accumulation_steps"] = gradient_accumulation_steps
        ds_config["gradient_clipping"] = max_grad_norm
    assert_distribution(accelerator, expected)
    return accelerator


def assert_distribution(accelerator: Accelerator, expected: dict | None = None) -> None:
    """Fail loudly unless the run is distributed as configured (world size, type, ZeRO stage, FSDP2)."""
    expected = expected or configured_distribution()
    problems = []
    if accelerator.num_processes != expected["world_size"]:
        problems.append(f"world size {accelerator.num_processes} != launcher's WORLD_SIZE {expected['world_size']}")
    if accelerator.distributed_type != expected["distributed_type"]:
        problems.append(f"distributed type {accelerator.distributed_type} != configured {expected['distributed_type']}")
    if expected["zero_stage"] is not None and zero_stage(accelerator) != expected["zero_stage"]:
        problems.append(f"ZeRO stage {zero_stage(accelerator)} != configured {expected['zero_stage']}")
    if accelerator.distributed_type == DistributedType.FSDP and not accelerator.is_fsdp2:
        problems.append("FSDP1 is configured; only FSDP2 (fsdp_version: 2) is supported")
    if problems:
        raise RuntimeError("This run is not distributed as configured (a silent Accelerate fallback?): "
                           + "; ".join(problems) + ". Launch with one of training/configs/*.yaml.")


def zero_stage(accelerator: Accelerator) -> int | None:
    """The DeepSpeed ZeRO stage, or None outside DeepSpeed."""
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return None
    return int(accelerator.state.deepspeed_plugin.zero_stage)


def local_parameter_numel(model: torch.nn.Module) -> int:
    """Number of parameter elements this process actually holds (0 for ZeRO-3 partitions, shard size for FSDP2)."""
    total = 0
    for parameter in model.parameters():
        if hasattr(parameter, "ds_tensor"):  # ZeRO-3: the local partition
            total += parameter.ds_tensor.numel()
        elif hasattr(parameter, "to_local"):  # FSDP2 DTensor
            total += parameter.to_local().numel()
        else:
            total += parameter.numel()
    return total


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def run_info(accelerator: Accelerator, model: torch.nn.Module | None = None, **extra) -> dict:
    """How this run is distributed and with which library versions."""
    info = {
        "world_size": accelerator.num_processes,
        "distributed_type": accelerator.distributed_type.value,
        "zero_stage": zero_stage(accelerator),
        "fsdp_version": 2 if accelerator.distributed_type == DistributedType.FSDP else None,
        # rank 0 alone built the weights and Accelerate broadcast them into the shards (training.pretrain._empty_model)
        "fsdp_cpu_ram_efficient_loading": (bool(accelerator.state.fsdp_plugin.cpu_ram_efficient_loading)
                                           if accelerator.distributed_type == DistributedType.FSDP else None),
        "mixed_precision": accelerator.mixed_precision,
        "gradient_accumulation_steps": accelerator.gradient_accumulation_steps,
        "device": str(accelerator.device),
        "versions": {name: _version(name) for name in ("torch", "transformers", "accelerate", "deepspeed",
                                                        "datasets", "tokenizers", "llama-paper")},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    if model is not None:
        info["local_parameter_numel"] = local_parameter_numel(model)
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
    info["zero3_init"] = is_deepspeed_zero3_enabled()  # the model was built under deepspeed.zero.Init
    info.update(extra)
    return info


def write_run_info(path: str | Path, info: dict) -> None:
    """Write run_info.json (main process only is the caller's job)."""
    Path(path).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


__all__ = ["build_accelerator", "assert_distribution", "configured_distribution", "fsdp_loads_from_rank0",
           "run_info", "write_run_info",
           "local_parameter_numel", "zero_stage"]
