"""`llama-paper pretrain`: pre-train LLaMA with the paper's recipe on Accelerate (single process, DDP, ZeRO, FSDP2).

With no arguments it is the demo job: train the paper's tokenizer (SentencePiece BPE, digits split, byte
fallback) on the shipped two-source corpus, pre-train a small LLaMA on CPU in a few minutes, report held-out
perplexity and bits per byte per source, print a sample, and leave a complete Hugging Face folder.
The same module runs under any launcher with the same flags:

    accelerate launch --config_file training/configs/cpu-zero3.yaml -m training.pretrain --preset tiny

Data parallelism: with token shards (prepared by `prepare-data`/`tokenize-data`) each data-parallel rank reads only
its own rows; with the on-the-fly packed stream (small local text) every process draws the same global batch and
keeps its own slice. Either way the data (and the losses) do not depend on the number of processes, and the stream
position in a checkpoint is the same on every rank.

Layout (as torchtitan): `setup_training` builds the parts once, `train_step` is one optimizer step, `train_loop`
adds logging, checkpoints and signals around it, `finish` evaluates and writes the final folder.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from modeling_llama.cli import USER_ERRORS, names_a_local_path

from .accelerator import (build_accelerator, configured_distribution, fsdp_loads_from_rank0, run_info,
                          write_run_info)
from .activation_checkpointing import apply_activation_checkpointing, eager_selective_warning
from .checkpointing import (TRAINER_STATE, GracefulStop, earlier_run, load_checkpoint, remove_paths, resolve_resume,
                            save_checkpoint, set_aside_newer)
from .heldout import evaluate_batches, token_byte_lengths, unigram_counts, unigram_loss
from .metrics import MetricsLogger, model_flops_utilization, read_metrics
from .model_card import write_model_card
from .optimizer import build_optimizer, build_scheduler
from .parallel import configured_mesh
from .run_config import RunConfig, available_presets, load_run_config
from .topology import topology_info

DEFAULT_PRESET = "demo"
UNIGRAM_MAX_DOCUMENTS = 20000  # the unigram baseline is fitted on at most this many training documents


# Run-config keys a resumed run may change: bookkeeping, evaluation and implementation choices that leave the maths
# of the updates alone. Changing any other key on resume would silently train a different run on the old state.
RESUMABLE_CHANGES = frozenset({
    "output_dir", "log_steps", "save_steps", "keep_checkpoints", "tensorboard", "max_shard_size", "eval_batch_size",
    "eval_max_batches", "sample_prompt", "sample_tokens", "max_nonfinite_steps", "tokenizer_workers", "peak_tflops",
    "tokenizer_max_documents",  # the tokenizer trained at the start is reused on resume, never retrained
    "compile", "attn_implementation", "activation_checkpointing", "max_steps", "sequence_parallel"})


class NonFiniteLossError(RuntimeError):
    """Raised after `max_nonfinite_steps` optimizer steps in a row had a non-finite loss or gradient norm."""


def resolve_mixture_path(name: str) -> Path:
    """"demo" / "paper" name a shipped mixture; anything else is a path to a mixture YAML/JSON."""
    from .data import demo_mixture_path
    if name == "demo":
        return demo_mixture_path()
    if name == "paper":
        from .data.mixture import paper_mixture_path
        return paper_mixture_path()
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"Mixture {name!r} is neither 'demo', 'paper' nor an existing mixture file.")
    return path


def prepare_tokenizer(run: RunConfig, mixture, output_dir: Path, accelerator):
    """Load `run.tokenizer`, or train the paper's tokenizer once into OUTPUT/tokenizer (reused on resume)."""
    import modeling_llama  # noqa: F401  (registers our tokenizer classes with AutoTokenizer)
    from transformers import AutoTokenizer

    if run.tokenizer:
        saved = (Path(run.tokenizer).expanduser() / "tokenizer_config.json").is_file()
        if names_a_local_path(run.tokenizer) and not saved:
            raise FileNotFoundError(f"tokenizer {run.tokenizer}: no saved tokenizer there (no tokenizer_config.json); "
                                    "pass a folder from `llama-paper train-tokenizer` or a model folder, or leave "
                                    "`tokenizer` unset to train one in the run.")
        return AutoTokenizer.from_pretrained(run.tokenizer), Path(run.tokenizer)
    folder = output_dir / "tokenizer"
    if accelerator.is_main_process and not (folder / "tokenizer_config.json").is_file():
        from .tokenizer import train_tokenizer
        accelerator.print(f"Training a {run.vocab_size}-piece SentencePiece BPE tokenizer on the training split...")
        # Deterministic for the seed (a resumed run must find the very same tokenizer); written atomically.
        texts = islice(mixture.iter_texts(split="train"), run.tokenizer_max_documents)
        train_tokenizer(texts, vocab_size=run.vocab_size, output_dir=folder, seed=run.seed, progress=False,
                        overwrite=True)
    accelerator.wait_for_everyone()
    return AutoTokenizer.from_pretrained(folder), folder


def build_model(run: RunConfig, tokenizer, rank: int = 0):
    """A freshly initialised LlamaPaperForCausalLM for the run's preset, sized to the tokenizer."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM

    overrides = {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
                 "eos_token_id": tokenizer.eos_token_id, **run.model}
    config = LlamaPaperConfig.from_preset(run.model_preset, **overrides)
    if rank != 0 and fsdp_loads_from_rank0():
        return _empty_model(LlamaPaperForCausalLM, config, run.attn_implementation)
    # `_from_config` (not the constructor) builds under deepspeed.zero.Init when the ZeRO-3 config asks for it
    # (`zero3_init_flag`): no process ever holds the whole model, and rank 0 initialises each module in turn from
    # the seed. FSDP2 with `fsdp_cpu_ram_efficient_loading` builds it on rank 0 only (above, the other ranks).
    torch.manual_seed(run.seed)
    model = LlamaPaperForCausalLM._from_config(config)
    if not is_deepspeed_zero3_enabled():
        # The constructor's torch default inits drew from the RNG before `_init_weights` ran (zero.Init skips
        # them): draw the weights again from the seed alone, so that every path gives the same initial model.
        torch.manual_seed(run.seed)
        for module in model.modules():
            module._is_hf_initialized = False
        model.initialize_weights()
    model.set_attn_implementation(run.attn_implementation)
    return model


def _empty_model(model_class, config, attn_implementation: str):
    """The model with uninitialised parameters, for a process whose weights FSDP2 will broadcast from rank 0.

    The parameters are real `torch.empty` CPU tensors, not meta ones: untouched pages of a large allocation are never
    resident, so this costs next to no memory, while Accelerate (1.15) maps the optimizer's parameters onto their
    shards by storage pointer, which meta tensors (all at 0) would collapse into one. The non-persistent buffers (the
    rotary frequencies) are computed as usual: they are not in the broadcast state dict."""
    from accelerate import init_empty_weights
    from transformers.initialization import no_init_weights

    with init_empty_weights(include_buffers=False), no_init_weights():
        model = model_class(config)
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            setattr(module, name, torch.nn.Parameter(torch.empty_like(param, device="cpu"),
                                                     requires_grad=param.requires_grad))
    model.set_attn_implementation(attn_implementation)
    return model


def build_train_stream(run: RunConfig, mixture, tokenizer_dir: Path, tokenizer, output_dir: Path, accelerator,
                       dp_rank: int, dp_size: int):
    """(mixture, training stream): memory-mapped token shards (prepared once into OUTPUT/data when
    `run.prepare_data`, or named by the mixture's `tokens`), each rank reading only its rows; else `PackedStream`."""
    from .data import PackedStream
    from .data.token_shards import TokenShardStream, token_sources

    prepare = run.prepare_data
    if prepare:
        try:
            import datatrove  # noqa: F401
        except ImportError:
            warnings.warn("prepare_data needs the data pipeline's packages (pip install 'llama-paper[data]'); "
                          "tokenizing the mixture on the fly instead.", UserWarning, stacklevel=2)
            prepare = False
    if prepare:
        from .data.pipeline.mixture_shards import prepare_mixture_shards
        if accelerator.is_main_process:  # the pipeline skips completed tasks: a resumed run finds them done
            prepare_mixture_shards(mixture, tokenizer_dir, output_dir / "data", tasks=2)
        accelerator.wait_for_everyone()
        shards = {s.name: (output_dir / "data" / "tokens" / s.name, s.weight) for s in mixture.sources if s.weight > 0}
    else:
        shards = token_sources(mixture)
    if shards:
        return mixture, TokenShardStream(shards, run.seq_len, seed=run.seed, rank=dp_rank,
                                         world_size=dp_size)
    return mixture, PackedStream(mixture, tokenizer, seq_len=run.seq_len, seed=run.seed, split="train",
                                 num_proc=run.tokenizer_workers)


def compute_loss(model, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of a packed batch (every position is a real token: no padding)."""
    return model(input_ids=batch, labels=batch, use_cache=False).loss


def _all_finite(accelerator, loss: torch.Tensor) -> bool:
    flag = torch.isfinite(loss.detach()).float().reshape(1)
    if accelerator.num_processes > 1:
        flag = accelerator.reduce(flag, reduction="sum") / accelerator.num_processes
    return bool(flag.item() == 1.0)


def _checks_losses_before_backward(accelerator) -> bool:
    """Whether a non-finite loss must be caught before its backward pass rather than once after the step's last one:
    with Accelerate's GradScaler (fp16), whose `unscale_` (in the clip) must not run for a step that is then dropped.

    Under DeepSpeed every micro-batch goes through backward, and the engine, which steps inside the last one, discards
    an update whose gradients are not finite and clears its accumulation buffers itself (ZeRO-1/2: fp32, and bf16
    with `check_grad_overflow`, DeepSpeed's default; ZeRO-3: always). Skipping the backward of a later micro-batch
    instead left the earlier ones' gradients in ZeRO's buffers, to leak into the next update.
    """
    return accelerator.scaler is not None


def _uses_fsdp(accelerator) -> bool:
    from accelerate.utils import DistributedType
    return accelerator.distributed_type == DistributedType.FSDP


def _uses_deepspeed(accelerator) -> bool:
    from accelerate.utils import DistributedType
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def _clip_gradients(accelerator, model, max_norm: float, tensor_parallel: bool):
    """The global gradient norm, clipped to `max_norm` (TP models hold DTensors on several meshes)."""
    if tensor_parallel:
        from .parallel import clip_grad_norm_
        return clip_grad_norm_(model.parameters(), max_norm)
    return accelerator.clip_grad_norm_(model.parameters(), max_norm)


def _dcp_checkpointer(run: RunConfig, mesh_shape, accelerator, model, optimizer):
    """A DCP checkpointer for TP runs and `async_checkpoint` runs; None for Accelerate's own `save_state`."""
    if mesh_shape.tp == 1 and not run.async_checkpoint:
        return None
    if _uses_deepspeed(accelerator):
        raise ValueError("async_checkpoint is not supported under DeepSpeed (its engine writes its own "
                         "checkpoints); use FSDP2 (training/configs/cpu-fsdp.yaml) or set async_checkpoint: false.")
    from .distributed_checkpoint import DistributedCheckpointer
    return DistributedCheckpointer(accelerator, model, getattr(optimizer, "optimizer", optimizer),
                                   run.async_checkpoint)


def _step_values(accelerator, losses: torch.Tensor, grad_norm,
                 stop_requested: bool) -> tuple[float, bool, float | None, bool]:
    """(mean loss, whether every loss was finite, gradient norm, whether any process got a signal) in one host sync.

    Every `.item()` of a GPU tensor waits for all queued kernels; folding the step's scalars into one tensor (and one
    all-reduce across processes) leaves a single wait per optimizer step.
    """
    stats = torch.stack([losses.mean(), torch.isfinite(losses).all().float(),
                         torch.tensor(float(stop_requested), device=losses.device)])
    if accelerator.num_processes > 1:
        stats = accelerator.reduce(stats.to(accelerator.device), reduction="mean")
    if hasattr(grad_norm, "full_tensor"):  # FSDP2 returns a DTensor
        grad_norm = grad_norm.full_tensor()
    if isinstance(grad_norm, torch.Tensor):  # already global: DDP/FSDP reduce gradients before the norm
        stats = torch.cat([stats, grad_norm.detach().float().reshape(1).to(stats.device)])
    values = stats.tolist()
    norm = values[3] if len(values) > 3 else (None if grad_norm is None else float(grad_norm))
    return values[0], values[1] == 1.0, norm, values[2] > 0


def _sharded(accelerator) -> bool:
    """Whether parameters are partitioned across processes (forward/generate are then collective)."""
    if _uses_fsdp(accelerator):
        return True
    return _uses_deepspeed(accelerator) and accelerator.state.deepspeed_plugin.zero_stage == 3


def check_output_dir(output_dir: Path, resume: str | bool | None, overwrite: bool) -> list[Path]:
    """An earlier run's leftovers that a fresh run must delete; FileExistsError unless --overwrite says so."""
    if resume and overwrite:
        raise ValueError("--resume continues the run in --output-dir and --overwrite deletes it: pass only one.")
    leftovers = [] if resume else earlier_run(output_dir)
    if leftovers and not overwrite:
        # A fresh run must neither reuse the old run's tokenizer nor leave its checkpoints for a later --resume.
        names = ", ".join(path.name for path in leftovers[:4]) + (", ..." if len(leftovers) > 4 else "")
        raise FileExistsError(f"{output_dir} already holds an earlier run ({names}); pass --resume to continue it, "
                              "--overwrite to delete it and start afresh, or choose another --output-dir.")
    return leftovers


def saved_run_config(checkpoint: Path) -> dict | None:
    """The run config a checkpoint was written under (None for older checkpoints, or a damaged state that
    `load_checkpoint` then reports with the way out)."""
    try:
        state = json.loads((Path(checkpoint) / TRAINER_STATE).read_text())
    except (OSError, ValueError):
        return None
    return state.get("run_config") if isinstance(state, dict) else None


def check_resumed_config(run: RunConfig, saved: dict | None, checkpoint: Path) -> None:
    """Refuse a resume that would change the training itself (keys outside RESUMABLE_CHANGES); warn on max_steps."""
    if saved is None:
        return
    current = run.to_dict()
    changed = [key for key in current if key in saved and key not in RESUMABLE_CHANGES and current[key] != saved[key]]
    if changed:
        details = ", ".join(f"{key} {saved[key]!r} -> {current[key]!r}" for key in changed)
        raise ValueError(f"--resume from {checkpoint} with other settings than the run it continues ({details}). "
                         "Pass --resume alone (the checkpoint holds the run's settings; flags such as --max-steps or "
                         "--save-steps may still change), or start a new run in another --output-dir.")
    if saved.get("max_steps") != run.max_steps:
        warnings.warn(f"Resuming with max_steps {run.max_steps} instead of {saved.get('max_steps')}: the "
                      "warm-up/cosine schedule is stretched to the new length, so from here on the run differs from "
                      "both.",
                      UserWarning, stacklevel=2)


def check_not_finished(output_dir: Path, max_steps: int) -> None:
    """--resume of a run that already reached `max_steps` has nothing to do: say so instead of training again."""
    summary = output_dir / "summary.json"
    if summary.is_file():
        finished = json.loads(summary.read_text()).get("steps")
        if isinstance(finished, int) and finished >= max_steps:
            raise FileExistsError(f"{output_dir} holds a run that finished at step {finished}: there is nothing to "
                                  f"resume. Pass a larger --max-steps to train on, or --overwrite to start afresh.")


@dataclass
class Progress:
    """The loop's counters. All of them are saved in every checkpoint, so a resumed run continues them exactly
    (the logging window's loss sum included: the first point logged after a resume is the uninterrupted one)."""

    step: int = 0
    tokens_seen: int = 0
    nonfinite_in_a_row: int = 0
    window_loss: float = 0.0
    window_steps: int = 0


@dataclass
class Training:
    """Everything a training step needs, built once by `setup_training` (model code stays free of all of it)."""

    run: RunConfig
    accelerator: Any
    model: Any
    model_config: Any
    optimizer: Any
    scheduler: Any
    stream: Any
    checkpointer: Any  # a DistributedCheckpointer, or None for Accelerate's own save_state
    mixture: Any
    tokenizer: Any
    tokenizer_dir: Path
    output_dir: Path
    mesh_shape: Any
    dp_rank: int
    dp_size: int
    accumulation: int
    warmup: int
    n_params: int

    @property
    def tokens_per_step(self) -> int:
        return self.run.micro_batch_size * self.run.seq_len * self.dp_size * self.accumulation


@dataclass
class StepOutcome:
    """What one optimizer step reports to the loop."""

    lr: float
    loss: float  # mean over the micro-batches and processes; nan/inf when one was not finite
    grad_norm: float | None  # None when the update was skipped
    problem: str | None  # why the update was skipped, None when it was applied
    stop_requested: bool  # any process got SIGTERM/SIGINT: checkpoint and stop after this step


def pretrain(run: RunConfig, resume: str | bool | None = None, overwrite: bool = False) -> dict:
    """Run (or resume) pre-training; returns the run summary (also written to OUTPUT/summary.json)."""
    started = time.perf_counter()
    output_dir = Path(run.output_dir)
    leftovers = check_output_dir(output_dir, resume, overwrite)
    checkpoint = resolve_resume(resume, output_dir)
    if resume:
        check_not_finished(output_dir, run.max_steps)
    if checkpoint is not None:
        check_resumed_config(run, saved_run_config(checkpoint), checkpoint)
    output_dir.mkdir(parents=True, exist_ok=True)
    t = setup_training(run, output_dir, leftovers)
    progress = restore_progress(t, checkpoint, resume)
    info = run_info(t.accelerator, t.model, run_config=run.to_dict(), parameters=t.n_params,
                    accumulation=t.accumulation, warmup_steps=t.warmup,
                    resumed_from=str(checkpoint) if checkpoint else None, async_checkpoint=run.async_checkpoint,
                    **topology_info(t.accelerator, t.model))  # nodes, processes per node, mesh: as the run finds them
    if t.accelerator.is_main_process:
        write_run_info(output_dir / "run_info.json", info)
    stopped_by = train_loop(t, progress)
    if stopped_by:
        t.accelerator.print(f"Stopped by {stopped_by} at step {progress.step}; checkpoint written to "
                            f"{output_dir}/checkpoint-{progress.step}. Resume with --resume.")
        return {"stopped_by": stopped_by, "step": progress.step, "output_dir": str(output_dir)}
    return finish(run, t.accelerator, t.model, t.model_config, t.tokenizer, t.tokenizer_dir, t.mixture, t.stream,
                  output_dir, info,
                  {"steps": progress.step, "tokens_seen": progress.tokens_seen, "parameters": t.n_params,
                   "warmup_steps": t.warmup, "accumulation": t.accumulation, "tokens_per_step": t.tokens_per_step,
                   "started": started})


def setup_training(run: RunConfig, output_dir: Path, leftovers: list[Path]) -> Training:
    """Accelerator, tokenizer, model (+ checkpointing, compile, TP), optimizer, schedule and data stream."""
    from modeling_llama.flops import count_parameters
    from .data import load_mixture

    # Before the Accelerator: a TP run takes itself off Accelerate's ND-parallel path (training/parallel.py).
    mesh_shape = configured_mesh(run.tensor_parallel, int(os.environ.get("WORLD_SIZE", "1")))
    world_size = configured_distribution()["world_size"]
    dp_size = world_size // mesh_shape.tp  # data-parallel ranks; the TP ranks of one group share a batch
    accumulation = run.resolved_accumulation(dp_size)
    accelerator = build_accelerator(accumulation, run.mixed_precision, run.micro_batch_size, run.max_grad_norm,
                                    project_dir=str(output_dir), log_with=["tensorboard"] if run.tensorboard else None)
    accelerator.wait_for_everyone()  # every process has checked output_dir before any process writes into it
    if leftovers and accelerator.is_main_process:
        remove_paths(leftovers)
    from accelerate.utils import set_seed
    set_seed(run.seed)
    rank = accelerator.process_index
    dp_rank = rank // mesh_shape.tp

    mixture = load_mixture(resolve_mixture_path(run.mixture))
    tokenizer, tokenizer_dir = prepare_tokenizer(run, mixture, output_dir, accelerator)
    model = build_model(run, tokenizer, rank)
    model_config = model.config
    apply_activation_checkpointing(model, run.activation_checkpointing)
    advice = eager_selective_warning(run.activation_checkpointing, run.compile, accelerator.device.type)
    if advice and accelerator.is_main_process:
        warnings.warn(advice)
    if run.compile:
        model.compile()  # in place: keeps the module (and its save_pretrained) intact
    if mesh_shape.tp > 1:  # TP (+SP) x FSDP2 applied here, not by Accelerate (see training/parallel.py)
        from .parallel import parallelize
        parallelize(model, mesh_shape, run.sequence_parallel, accelerator.device.type, run.mixed_precision)
    optimizer = build_optimizer(model, run.learning_rate, run.weight_decay, (run.adam_beta1, run.adam_beta2),
                                run.adam_eps)
    if mesh_shape.tp == 1:
        model, optimizer = accelerator.prepare(model, optimizer)
    checkpointer = _dcp_checkpointer(run, mesh_shape, accelerator, model, optimizer)
    warmup = run.resolved_warmup_steps()
    # Not passed through prepare: Accelerate would step it once per process per update (see optimizer.py).
    scheduler = build_scheduler(optimizer, warmup, run.max_steps, run.min_lr_ratio)
    mixture, stream = build_train_stream(run, mixture, tokenizer_dir, tokenizer, output_dir, accelerator,
                                          dp_rank, dp_size)
    return Training(run, accelerator, model, model_config, optimizer, scheduler, stream, checkpointer, mixture,
                    tokenizer, tokenizer_dir, output_dir, mesh_shape, dp_rank, dp_size, accumulation, warmup,
                    count_parameters(model_config))


def restore_progress(t: Training, checkpoint: Path | None, resume: str | bool | None) -> Progress:
    """The counters to start from: a checkpoint's (model, optimizer, schedule and data position restored too)."""
    say = t.accelerator.print
    if checkpoint is None:
        if resume:
            say(f"No checkpoint in {t.output_dir} yet: starting from step 0.")
        return Progress()
    state = t.checkpointer.load(checkpoint) if t.checkpointer else load_checkpoint(t.accelerator, checkpoint)
    progress = Progress(state["step"], state["tokens_seen"], state.get("nonfinite_in_a_row", 0),
                        state.get("window_loss", 0.0), state.get("window_steps", 0))
    t.scheduler.load_state_dict(state["scheduler"])
    t.stream.load_state_dict(state["data"])
    if t.accelerator.is_main_process:
        for folder in set_aside_newer(t.output_dir, progress.step):
            say(f"Set aside {folder.name}: it continued this checkpoint on a path the resumed run abandons.")
    t.accelerator.wait_for_everyone()
    say(f"Resumed from {checkpoint} at step {progress.step}.")
    return progress


def trainer_state(t: Training, progress: Progress) -> dict:
    """What a checkpoint holds besides the model and optimizer (trainer_state.json)."""
    return {"step": progress.step, "tokens_seen": progress.tokens_seen,
            "nonfinite_in_a_row": progress.nonfinite_in_a_row, "scheduler": t.scheduler.state_dict(),
            "data": t.stream.state_dict(), "tracker_step": progress.step, "window_loss": progress.window_loss,
            "window_steps": progress.window_steps, "run_config": t.run.to_dict()}


def train_loop(t: Training, progress: Progress) -> str | None:
    """Optimizer steps up to `max_steps`, with logging and checkpoints; the signal's name if one stopped it early."""
    from modeling_llama.flops import flops_per_token
    from .hardware import peak_flops

    run, accelerator = t.run, t.accelerator
    logger = MetricsLogger(accelerator, t.output_dir, run.max_steps, start_step=progress.step,
                           use_tracker=run.tensorboard, tracker_config=run.to_dict())
    flops_token = flops_per_token(t.model_config, run.seq_len)
    peak = run.peak_tflops * 1e12 if run.peak_tflops else peak_flops(accelerator.device)
    stop, stopped_by = GracefulStop(), None
    t.model.train()
    window_start, window_tokens = time.perf_counter(), 0
    while progress.step < run.max_steps:
        outcome = train_step(t, stop.requested is not None, progress.step)
        count_step(progress, outcome, t.tokens_per_step, run.max_nonfinite_steps)
        window_tokens += t.tokens_per_step
        logger.advance()
        if progress.step % run.log_steps == 0 or progress.step == run.max_steps:
            tokens_per_s = window_tokens / max(time.perf_counter() - window_start, 1e-9)
            logger.log(progress.step, {
                "loss": progress.window_loss / progress.window_steps if progress.window_steps else float("nan"),
                "lr": outcome.lr, "grad_norm": outcome.grad_norm, "tokens_per_s": tokens_per_s,
                "tokens": progress.tokens_seen,
                "mfu": model_flops_utilization(tokens_per_s, flops_token, peak, accelerator.num_processes),
            })
            progress.window_loss, progress.window_steps = 0.0, 0
            window_start, window_tokens = time.perf_counter(), 0
        if progress.nonfinite_in_a_row >= run.max_nonfinite_steps:
            logger.close()
            stop.restore()
            raise NonFiniteLossError(f"{progress.nonfinite_in_a_row} optimizer steps in a row had a non-finite loss "
                                     f"or gradient norm (step {progress.step}); lower the learning rate or use bf16 "
                                     "instead of fp16.")
        if (run.save_steps and progress.step % run.save_steps == 0) or outcome.stop_requested:
            save = t.checkpointer.save if t.checkpointer else functools.partial(save_checkpoint, accelerator)
            save(t.output_dir, progress.step, trainer_state(t, progress), run.keep_checkpoints,
                 model_config=t.model_config, tokenizer_dir=t.tokenizer_dir)
        if outcome.stop_requested:
            stopped_by = stop.requested or "signal"
            break
    stop.restore()
    logger.close()
    t.stream.close()  # tokenizer worker processes, if any
    if t.checkpointer:
        t.checkpointer.wait()  # the last checkpoint must be on disk (and published) before the run ends
    return stopped_by


def count_step(progress: Progress, outcome: StepOutcome, tokens_per_step: int, max_nonfinite: int) -> None:
    """Advance the counters past one step; a skipped update is counted (and warned about), never silent."""
    if outcome.problem:
        progress.nonfinite_in_a_row += 1
        # Numbered like metrics.jsonl and the progress bar: the step this update would have completed.
        warnings.warn(f"step {progress.step + 1}: {outcome.problem}; update skipped ({progress.nonfinite_in_a_row} "
                      f"in a row, limit {max_nonfinite}).", RuntimeWarning, stacklevel=2)
    else:
        progress.nonfinite_in_a_row = 0
    progress.step += 1
    progress.tokens_seen += tokens_per_step
    if math.isfinite(outcome.loss):
        progress.window_loss += outcome.loss
        progress.window_steps += 1


def train_step(t: Training, stop_requested: bool, step: int = 0) -> StepOutcome:
    """Optimizer step `step + 1`: `accumulation` micro-batches forward and backward, clip, update (or skip), schedule."""
    from .data.token_shards import next_rank_batch

    accelerator, model, optimizer = t.accelerator, t.model, t.optimizer
    lr = t.scheduler.get_last_lr()[0]
    early_checks = _checks_losses_before_backward(accelerator)
    losses, skipped = [], False
    for _ in range(t.accumulation):
        # token shards: this data-parallel rank's own rows (the TP ranks of a group share them)
        batch = next_rank_batch(t.stream, t.run.micro_batch_size, t.dp_rank, t.dp_size).to(accelerator.device)
        with accelerator.accumulate(model):
            loss = compute_loss(model, batch)
            if early_checks and (skipped or not _all_finite(accelerator, loss)):
                skipped = True
            else:
                accelerator.backward(loss)
        losses.append(loss.detach().float())
    grad_norm = None if skipped else _clip_gradients(accelerator, model, t.run.max_grad_norm, t.mesh_shape.tp > 1)
    step_loss, losses_finite, grad_norm, should_stop = _step_values(accelerator, torch.stack(losses), grad_norm,
                                                                    stop_requested)
    # A non-finite gradient norm of a finite loss (overflow in backward) must not reach the weights either,
    # unless fp16's loss scaler owns that case: it skips the update itself and lowers its scale.
    fp16 = accelerator.mixed_precision == "fp16"
    bad_norm = not fp16 and grad_norm is not None and not math.isfinite(grad_norm)
    if _uses_deepspeed(accelerator) and (not losses_finite or bad_norm) and grad_norm != math.inf:
        # The engine reports an infinite norm for the updates it discarded; anything else means it applied one.
        raise RuntimeError(f"step {step + 1}: DeepSpeed applied an update with non-finite gradients (gradient norm {grad_norm}); "
                           "keep bf16.check_grad_overflow on in the DeepSpeed config.")
    problem = None
    if skipped or not losses_finite or bad_norm:
        # No update, but the step (data, schedule) is consumed. DeepSpeed's engine has already discarded it
        # (and its buffers) inside backward; elsewhere drop the gradients here.
        optimizer.zero_grad(set_to_none=True)
        problem = "non-finite loss" if skipped or not losses_finite else f"non-finite gradient norm ({grad_norm})"
        grad_norm = None
    else:
        if t.checkpointer:
            t.checkpointer.wait_for_staging()  # an async save may still be copying the state this step changes
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    with warnings.catch_warnings():  # a skipped update legitimately steps the schedule without the optimizer
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
        t.scheduler.step()
    return StepOutcome(lr, step_loss, grad_norm, problem, should_stop)


def finish(run, accelerator, model, model_config, tokenizer, tokenizer_dir, mixture, stream, output_dir, info,
           progress: dict) -> dict:
    """End of run: held-out evaluation, a sample, the final Hugging Face folder with model card and plot."""
    from .data import PackedStream

    say = accelerator.print
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    byte_lengths = token_byte_lengths(tokenizer)
    counts = unigram_counts(
        (tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
         for text in islice(mixture.iter_texts(split="train"), UNIGRAM_MAX_DOCUMENTS)), len(tokenizer))
    heldout = {}
    for source in mixture.sources:
        if source.path is None and source.dataset is None:
            continue  # a token-shard-only source has no text to hold out
        def batches(name=source.name):
            return PackedStream(mixture, tokenizer, seq_len=run.seq_len, seed=run.seed, split="validation",
                                source=name).iter_batches(run.eval_batch_size)
        # Every rank evaluates the same batches: with sharded parameters the forward pass is collective.
        result = evaluate_batches(unwrapped, batches(), byte_lengths, accelerator.device, run.eval_max_batches)
        result["unigram_loss"] = unigram_loss(counts, batches(), run.eval_max_batches)
        heldout[source.name] = result
    sample = generate_sample(run, accelerator, unwrapped, tokenizer)

    if info["mesh"]["tp"] > 1:  # a model parallelised outside Accelerate (training/parallel.py)
        from .distributed_checkpoint import full_model_state_dict
        state_dict = full_model_state_dict(model)
    else:
        state_dict = accelerator.get_state_dict(model)  # collective: gathers ZeRO-3 / FSDP shards on the main process
    records = read_metrics(output_dir / "metrics.jsonl")
    summary = {
        "name": output_dir.name, "run_config": run.to_dict(), "model_config": model_config.to_diff_dict(),
        "mixture": {s.name: {"weight": round(p, 4), "dataset": s.dataset, "config": s.config}
                    for s, p in zip(mixture.sources, mixture.probabilities.values(), strict=True)},
        "data_stats": stream.stats(), "heldout": heldout, "sample": sample, "run_info": info,
        "final_train_loss": next((r["loss"] for r in reversed(records) if isinstance(r.get("loss"), float)), None),
        "wall_time_s": time.perf_counter() - progress.pop("started"), **progress,
    }
    if accelerator.is_main_process:
        save_final_folder(output_dir, unwrapped.__class__, model_config, state_dict, tokenizer_dir, run.max_shard_size)
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
        write_model_card(output_dir, summary, records)  # the card is rebuilt from the folder's files
        report(summary, say)
    accelerator.wait_for_everyone()
    return summary


def generate_sample(run: RunConfig, accelerator, model, tokenizer) -> str:
    """A sampled continuation of `run.sample_prompt` (every rank generates: collective under sharding)."""
    if not run.sample_tokens:
        return ""
    inputs = tokenizer(run.sample_prompt, return_tensors="pt").to(accelerator.device)
    torch.manual_seed(run.seed)  # same sample on every rank and in every rerun
    was_training = model.training
    model.eval()
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=run.sample_tokens, do_sample=True, top_k=40,
                                temperature=0.8, pad_token_id=tokenizer.eos_token_id,
                                synced_gpus=accelerator.num_processes > 1 and _sharded(accelerator))
    model.train(was_training)
    return tokenizer.decode(output[0], skip_special_tokens=True)


def save_final_folder(output_dir: Path, model_class, model_config, state_dict: dict, tokenizer_dir: Path,
                      max_shard_size: str) -> None:
    """Sharded safetensors + config (with auto_map) + generation config + both tokenizers at OUTPUT's root."""
    from modeling_llama import LlamaPaperForCausalLM

    # A fresh meta-device model of our class (not the engine's wrapper class, e.g. FSDP's) takes the gathered
    # weights without allocating a second copy.
    with torch.device("meta"):
        final = LlamaPaperForCausalLM(model_config)
    final.load_state_dict(dict(state_dict), strict=True, assign=True)
    final.save_pretrained(output_dir, max_shard_size=max_shard_size)  # save_pretrained empties the dict it gets
    for item in Path(tokenizer_dir).iterdir():
        if item.is_file() and item.name != "config.json":
            shutil.copy2(item, output_dir / item.name)


def report(summary: dict, say) -> None:
    """Print the held-out results and the sample."""
    say(f"\nTrained {summary['parameters']:,} parameters for {summary['steps']} steps "
        f"({summary['tokens_seen']:,} tokens) in {summary['wall_time_s']:.0f} s.")
    for name, r in summary["heldout"].items():
        if r["loss"] is None:
            say(f"  held-out {name}: no validation data")
            continue
        say(f"  held-out {name}: loss {r['loss']:.3f} nats/token, perplexity {r['perplexity']:.1f}, "
            f"{r['bits_per_byte']:.3f} bits/byte (unigram baseline loss {r['unigram_loss']:.3f})")
    for name, s in summary["data_stats"].items():
        epochs = s.get("epochs")
        # A streamed source's length is unknown until its first pass ends.
        passes = "epochs unknown (stream still in its first pass)" if epochs is None else f"{epochs:.2f} epochs"
        if epochs is not None and s.get("epochs_estimated"):
            passes = f"~{passes} (from the size the dataset declares)"
        say(f"  data {name}: {s.get('tokens', 0):,} tokens, {passes}")
    say(f"\nSample:\n{summary['sample']}\n")


# --- command line ---------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags shared by `llama-paper pretrain` and `python -m training.pretrain`."""
    parser.add_argument("--preset", help=f"run preset ({', '.join(available_presets())}; default {DEFAULT_PRESET} "
                                         "unless --config is given)")
    parser.add_argument("--config", help="run config YAML/JSON (keys of training.run_config.RunConfig)")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--save-steps", type=int, help="checkpoint every N optimizer steps (0 = only on signals)")
    parser.add_argument("--output-dir")
    parser.add_argument("--resume", nargs="?", const="latest", default=None,
                        help="resume from the newest checkpoint in --output-dir, or from the given checkpoint folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete an earlier run (checkpoints, tokenizer, logs) in --output-dir and start afresh")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--mixture", help="'demo', 'paper', or a mixture YAML")
    parser.add_argument("--tokenizer", help="an existing tokenizer folder (default: train one)")
    parser.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"))
    parser.add_argument("--activation-checkpointing", choices=("none", "full", "selective"))
    parser.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    parser.add_argument("--log-steps", type=int)
    parser.add_argument("--consolidate", metavar="CHECKPOINT",
                        help="instead of training: turn a (ZeRO-3/FSDP-sharded) checkpoint-<step> folder into a normal "
                             "Hugging Face folder in --output-dir, then exit")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any run-config key, e.g. --set learning_rate=1e-3 --set model.hidden_size=128")
    parser.add_argument("--push-to-hub", metavar="REPO",
                        help="at the end of the run, upload the final folder to the Hub as NAMESPACE/NAME "
                             "(as `llama-paper push`)")
    # DeepSpeed's launcher (also accelerate's nossh/pdsh multi-node one) passes --local_rank=N; LOCAL_RANK says the same.
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)


def run_from_args(args: argparse.Namespace) -> int:
    """Entry point of the sub-command; returns the exit code."""
    if args.consolidate:
        from .checkpointing import consolidate_checkpoint
        if not args.output_dir:
            print("llama-paper pretrain: error: --consolidate needs --output-dir for the new folder.", file=sys.stderr)
            return 2
        print(f"Consolidated into {consolidate_checkpoint(args.consolidate, args.output_dir)}")
        return 0
    preset = args.preset or (None if args.config else DEFAULT_PRESET)
    base = None
    if args.resume and not (args.preset or args.config):
        # `--resume` alone continues the run in --output-dir with the settings its checkpoint was written under.
        output_dir = Path(args.output_dir or RunConfig.from_preset(DEFAULT_PRESET).output_dir)
        checkpoint = resolve_resume(args.resume, output_dir)
        saved = saved_run_config(checkpoint) if checkpoint is not None else None
        if saved is not None:
            base = RunConfig.from_dict({**saved, "output_dir": str(output_dir)}, source=str(checkpoint / TRAINER_STATE))
            preset = None
    flags = {"max_steps": args.max_steps, "save_steps": args.save_steps, "output_dir": args.output_dir,
             "seed": args.seed, "mixture": args.mixture, "tokenizer": args.tokenizer,
             "mixed_precision": args.mixed_precision, "activation_checkpointing": args.activation_checkpointing,
             "compile": args.compile, "log_steps": args.log_steps}
    try:
        run = load_run_config(preset, args.config, flags, args.set, base=base)
    except (ValueError, FileNotFoundError) as error:
        print(f"llama-paper pretrain: error: {error}", file=sys.stderr)
        return 2
    try:
        summary = pretrain(run, resume=args.resume, overwrite=args.overwrite)
    except NonFiniteLossError as error:
        print(f"llama-paper pretrain: error: {error}", file=sys.stderr)
        return 1
    if args.push_to_hub and not summary.get("stopped_by"):
        from publishing.push import push_at_end
        return push_at_end(run.output_dir, args.push_to_hub, command="pretrain")
    return 0


def register(subparsers) -> None:
    """Add the `pretrain` sub-command (entry point `llama_paper.commands`)."""
    parser = subparsers.add_parser("pretrain", help="pre-train LLaMA with the paper's recipe (demo job by default)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(func=run_from_args)


def main(argv: list[str] | None = None) -> int:
    """`python -m training.pretrain ...` (what `accelerate launch -m training.pretrain` runs)."""
    parser = argparse.ArgumentParser(prog="python -m training.pretrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_from_args(args)
    except USER_ERRORS as error:  # one line per process under a launcher, as `llama-paper pretrain` prints
        print(f"python -m training.pretrain: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
