"""`llama-paper plan`: what a pre-training run costs (paper §2.4 and §5): FLOPs, memory per GPU, steps, days.

Throughput model: tokens/s/GPU = MFU x peak bf16 FLOP/s / training FLOPs per token, where FLOPs per token are
`modeling_llama.flops.flops_per_token` (6N for the matmuls plus PaLM's attention term 12·L·d·T). The paper states
one MFU-like figure (65B: ~380 tokens/s/GPU on A100-80GB, "about 48%" counting 6N only) and GPU-hours per size (§5):
dividing the Table 2 token counts by those GPU-hours gives the achieved tokens/s/GPU of every size, hence its MFU
under our FLOPs count (`paper_mfu`): 7B 0.46, 13B 0.54, 33B 0.48, 65B 0.50. These are the defaults for the
paper's presets (on any accelerator: an assumption that the same software reaches the same MFU elsewhere); other
presets default to `DEFAULT_MFU`.

Memory model (bytes per GPU), with Ψ parameters, N data-parallel GPUs and the paper's mixed precision (bf16
weights and gradients for compute, fp32 master weights and Adam moments: 2 + 2 + 12 bytes per parameter, the ZeRO
paper's K = 12):
  DDP     2Ψ + 2Ψ + 12Ψ               ZeRO-1  2Ψ + 2Ψ + 12Ψ/N
  ZeRO-2  2Ψ + (2 + 12)Ψ/N            ZeRO-3  16Ψ/N + working set
  FSDP (FULL_SHARD, bf16 MixedPrecision: fp32 sharded weights 4 + fp32 grads 4 + Adam 8) 16Ψ/N + working set
The working set of ZeRO-3/FSDP is the unsharded bf16 weights of two units (the running one and the prefetched
one, a unit = one decoder layer or the larger of embedding/head) plus one unit's bf16 gradients before reduce-scatter.
Activations per token and layer (bytes), bf16 with memory-efficient attention (no T² scores), for our decoder layer
(d = hidden, f = SwiGLU width, k = key/value width, k = d without GQA):
  none       20d + 4k + 8f: each RMSNorm keeps its float32 input, its normalised bf16 value and its output
             (4d + 2d + 2d, twice: the paper computes norms in float32), attention keeps q, k, v and its output
             (4d + 4k), SwiGLU keeps gate, up, silu(gate) and their product (8f). A test checks this against the
             tensors autograd actually saves in `LlamaPaperForCausalLM`.
  selective  10d + 4k + 4f: §2.4's choice as `training.activation_checkpointing` implements it: keep the layer input
             and the outputs of the expensive ops (the seven linear layers and the attention kernel: 2d + 2d + 4k +
             2d + 2d + 4f + 2d), recompute norms, RoPE, silu and the product
  full       2d: only each layer's input, plus one layer's full activations while it is recomputed
plus, once per token, the final norm (8d) and the output head: the float32 log-probabilities of the loss and the
bf16 logits alive next to them (6V). Each GPU holds a micro-batch of `micro_batch` sequences. Tensor/sequence
parallelism (also used by the paper) is not modelled.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from modeling_llama.configuration_llama_paper import PAPER_PARAMETERS, LlamaPaperConfig
from modeling_llama.flops import count_parameters, flops_per_token

from .hardware import ACCELERATORS, GiB, get_accelerator

# Table 2: training tokens; §5 (carbon footprint table): GPU-hours on A100-80GB.
PAPER_TOKENS: dict[str, float] = {"7B": 1.0e12, "13B": 1.0e12, "33B": 1.4e12, "65B": 1.4e12}
PAPER_GPU_HOURS: dict[str, float] = {"7B": 82_432, "13B": 135_168, "33B": 530_432, "65B": 1_022_362}
PAPER_GPU = "a100-80gb"
PAPER_SEQ_LEN = 2048
PAPER_BATCH_TOKENS = 2048 * 2048  # "4M tokens": 2048 sequences of 2048 tokens
DEFAULT_MFU = 0.40  # presets the paper did not train; a typical well-tuned large-scale figure
CHINCHILLA_TOKENS_PER_PARAMETER = 20  # default token budget for presets outside Table 2

STRATEGIES = ("DDP", "ZeRO-1", "ZeRO-2", "ZeRO-3", "FSDP")
CHECKPOINTING = ("none", "selective", "full")


def paper_mfu(preset: str, seq_len: int = PAPER_SEQ_LEN) -> float:
    """MFU the paper achieved for a Table 2 size, derived from its GPU-hours (§5) and token count (Table 2)."""
    if preset not in PAPER_GPU_HOURS:
        raise ValueError(f"The paper reports GPU-hours only for {', '.join(PAPER_GPU_HOURS)}, not {preset!r}.")
    config = LlamaPaperConfig.from_preset(preset)
    tokens_per_s_per_gpu = PAPER_TOKENS[preset] / (PAPER_GPU_HOURS[preset] * 3600)
    return tokens_per_s_per_gpu * flops_per_token(config, seq_len) / get_accelerator(PAPER_GPU).peak_bf16_flops


@dataclass
class MemoryEstimate:
    """Bytes per GPU for one sharding strategy and checkpointing mode."""

    parameters: float
    gradients: float
    optimizer: float
    working_set: float
    activations: float

    @property
    def total(self) -> float:
        """Sum of all parts, in bytes."""
        return self.parameters + self.gradients + self.optimizer + self.working_set + self.activations


def model_state_bytes(config: LlamaPaperConfig, strategy: str, gpus: int) -> tuple[float, float, float, float]:
    """(parameters, gradients, optimizer, working set) in bytes per GPU for a sharding strategy (module docstring)."""
    psi, n = count_parameters(config), gpus
    if strategy == "DDP":
        return 2 * psi, 2 * psi, 12 * psi, 0.0
    if strategy == "ZeRO-1":
        return 2 * psi, 2 * psi, 12 * psi / n, 0.0
    if strategy == "ZeRO-2":
        return 2 * psi, 2 * psi / n, 12 * psi / n, 0.0
    unit = max(count_parameters(config, include_embeddings=False) / config.num_hidden_layers,
               config.vocab_size * config.hidden_size)
    working_set = 3 * 2 * unit  # two units of bf16 weights gathered + one unit of bf16 gradients
    if strategy == "ZeRO-3":
        return 2 * psi / n, 2 * psi / n, 12 * psi / n, working_set
    if strategy == "FSDP":
        return 4 * psi / n, 4 * psi / n, 8 * psi / n, working_set
    raise ValueError(f"Unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}.")


def layer_activation_bytes(config: LlamaPaperConfig, checkpointing: str) -> int:
    """Activation bytes one decoder layer keeps per token for backward (module docstring for the terms)."""
    d, f = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * config.head_dim
    per_layer = {
        "none": 2 * (4 * d + 2 * d + 2 * d) + (2 * d + 4 * kv + 2 * d) + 8 * f,
        "selective": 2 * d + (2 * d + 4 * kv) + 2 * d + 2 * d + 4 * f + 2 * d,
        "full": 2 * d,
    }
    if checkpointing not in per_layer:
        raise ValueError(f"Unknown checkpointing mode {checkpointing!r}; choose one of {', '.join(CHECKPOINTING)}.")
    return per_layer[checkpointing]


def activation_bytes(config: LlamaPaperConfig, tokens: int, checkpointing: str) -> float:
    """Activation memory in bytes for `tokens` tokens on one GPU: all layers, the head, and any recomputation."""
    layers = config.num_hidden_layers * layer_activation_bytes(config, checkpointing)
    head = 8 * config.hidden_size + 6 * config.vocab_size  # final norm; fp32 log-probs + bf16 logits
    recompute = layer_activation_bytes(config, "none") if checkpointing == "full" else 0  # the layer being redone
    return tokens * (layers + head + recompute)


@dataclass
class Plan:
    """Everything `llama-paper plan` reports for one run."""

    preset: str
    gpu: str
    gpus: int
    mfu: float
    mfu_source: str
    tokens: float
    seq_len: int
    batch_tokens: int
    parameters: int
    flops_per_token: float
    steps: int
    micro_batch: int
    gradient_accumulation: int
    tokens_per_s_per_gpu: float
    days: float
    gpu_hours: float
    gpu_memory_bytes: int | None
    memory: dict[str, dict[str, MemoryEstimate]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable, with per-strategy totals in GiB."""
        data = asdict(self)
        data["memory_gib"] = {s: {c: m.total / GiB for c, m in modes.items()} for s, modes in self.memory.items()}
        return data


def make_plan(preset: str, gpus: int, gpu: str = PAPER_GPU, mfu: float | None = None, tokens: float | None = None,
              seq_len: int = PAPER_SEQ_LEN, batch_tokens: int = PAPER_BATCH_TOKENS,
              micro_batch: int | None = None) -> Plan:
    """Plan a pre-training run of a model preset on `gpus` accelerators of kind `gpu`."""
    if gpus < 1:
        raise ValueError(f"--gpus must be >= 1, got {gpus}.")
    if seq_len < 1 or batch_tokens < seq_len:
        raise ValueError(f"Need seq_len >= 1 and batch_tokens >= seq_len, got {seq_len} and {batch_tokens}.")
    accelerator = get_accelerator(gpu)
    if accelerator.peak_bf16_flops is None:
        raise ValueError(f"{accelerator.description} has no known peak FLOP/s; plan for one of "
                         f"{', '.join(k for k, a in ACCELERATORS.items() if a.peak_bf16_flops)}.")
    config = LlamaPaperConfig.from_preset(preset)
    notes: list[str] = []
    if mfu is None:
        if preset in PAPER_GPU_HOURS:
            mfu, mfu_source = paper_mfu(preset, seq_len), "the paper's, from its GPU-hours in §5"
        else:
            mfu, mfu_source = DEFAULT_MFU, "default assumption"
    else:
        mfu_source = "given"
    if not 0 < mfu <= 1:
        raise ValueError(f"--mfu must be in (0, 1], got {mfu}.")
    if tokens is None:
        tokens = PAPER_TOKENS.get(preset, CHINCHILLA_TOKENS_PER_PARAMETER * count_parameters(config))
    per_token = flops_per_token(config, seq_len)
    throughput = mfu * accelerator.peak_bf16_flops / per_token
    sequences = batch_tokens // seq_len
    if micro_batch is None:
        micro_batch = max(1, sequences // gpus)
    accumulation = max(1, math.ceil(sequences / (gpus * micro_batch)))
    if gpus > sequences:
        notes.append(f"{gpus} GPUs exceed the {sequences} sequences of a batch: the extra parallelism must come from "
                     "tensor/sequence parallelism, which this memory model does not include.")
    memory = {}
    for strategy in STRATEGIES:
        params, grads, optimizer, working = model_state_bytes(config, strategy, gpus)
        memory[strategy] = {mode: MemoryEstimate(params, grads, optimizer, working,
                                                 activation_bytes(config, micro_batch * seq_len, mode))
                            for mode in CHECKPOINTING}
    return Plan(
        preset=preset, gpu=accelerator.key, gpus=gpus, mfu=mfu, mfu_source=mfu_source, tokens=float(tokens),
        seq_len=seq_len, batch_tokens=batch_tokens, parameters=count_parameters(config), flops_per_token=per_token,
        steps=math.ceil(tokens / batch_tokens), micro_batch=micro_batch, gradient_accumulation=accumulation,
        tokens_per_s_per_gpu=throughput, days=tokens / (throughput * gpus) / 86400,
        gpu_hours=tokens / throughput / 3600, gpu_memory_bytes=accelerator.memory_bytes, memory=memory, notes=notes,
    )


def format_plan(plan: Plan) -> str:
    """The human-readable report."""
    paper = PAPER_PARAMETERS.get(plan.preset)
    lines = [
        f"LLaMA {plan.preset} on {plan.gpus} x {get_accelerator(plan.gpu).description}",
        f"  parameters          {plan.parameters / 1e9:,.2f} B" + (f" (paper: {paper / 1e9:.1f} B)" if paper else ""),
        f"  FLOPs per token     {plan.flops_per_token:.3e} (training, seq {plan.seq_len}: 6N + attention)",
        f"  tokens              {plan.tokens:.3e} in {plan.steps:,} steps of {plan.batch_tokens:,} tokens",
        f"  per GPU and step    micro-batch {plan.micro_batch} x {plan.seq_len} tokens, "
        f"gradient accumulation {plan.gradient_accumulation}",
        f"  MFU                 {plan.mfu:.3f} ({plan.mfu_source})",
        f"  tokens/s/GPU        {plan.tokens_per_s_per_gpu:,.0f}",
        f"  wall-clock          {plan.days:,.1f} days",
        f"  GPU-hours           {plan.gpu_hours:,.0f}",
        "",
        "Memory per GPU in GiB (weights + grads + optimizer + ZeRO-3/FSDP working set + activations), "
        f"of {plan.gpu_memory_bytes / GiB:.0f} GiB:" if plan.gpu_memory_bytes else "Memory per GPU in GiB:",
        f"  {'strategy':<8} {'states':>9} " + " ".join(f"{'act. ' + m:>16}" for m in CHECKPOINTING),
    ]
    for strategy, modes in plan.memory.items():
        any_mode = modes[CHECKPOINTING[0]]
        states = any_mode.total - any_mode.activations
        cells = []
        for mode in CHECKPOINTING:
            total = modes[mode].total
            fits = "" if plan.gpu_memory_bytes is None else (" ok" if total <= plan.gpu_memory_bytes else " --")
            cells.append(f"{total / GiB:>13,.1f}{fits}")
        lines.append(f"  {strategy:<8} {states / GiB:>9,.1f} " + " ".join(cells))
    lines.append("  (ok = fits, -- = does not fit; activations for the micro-batch, bf16, memory-efficient attention)")
    lines.extend(f"note: {n}" for n in plan.notes)
    return "\n".join(lines)


def _from_run_config(path: str) -> dict[str, Any]:
    import yaml

    values = yaml.safe_load(Path(path).read_text()) or {}
    plan_args: dict[str, Any] = {}
    if "model_preset" in values:
        plan_args["preset"] = values["model_preset"]
    if "seq_len" in values:
        plan_args["seq_len"] = int(values["seq_len"])
    if values.get("batch_tokens"):
        plan_args["batch_tokens"] = int(values["batch_tokens"])
        if values.get("max_steps"):
            plan_args["tokens"] = float(values["max_steps"]) * int(values["batch_tokens"])
    if values.get("micro_batch_size"):
        plan_args["micro_batch"] = int(values["micro_batch_size"])
    return plan_args


def run(args: argparse.Namespace) -> int:
    """Entry point of `llama-paper plan`."""
    values: dict[str, Any] = _from_run_config(args.config) if args.config else {}
    for key in ("preset", "gpu", "mfu", "tokens", "seq_len", "batch_tokens", "micro_batch"):
        value = getattr(args, key)
        if value is not None:
            values[key] = value
    if "preset" not in values:
        raise SystemExit("llama-paper plan: give --preset (e.g. 65B) or a --config run file with model_preset.")
    if "batch_tokens" in values:
        values["batch_tokens"] = int(values["batch_tokens"])
    plan = make_plan(gpus=args.gpus, **values)  # bad flags raise ValueError: llama-paper prints one line, exit 2
    print(json.dumps(plan.to_dict(), indent=2) if args.json else format_plan(plan))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `plan` subcommand."""
    parser = subparsers.add_parser("plan", help="Estimate FLOPs, memory per GPU, steps, days and GPU-hours of a run.",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", help="model preset: 7B, 13B, 33B, 65B (or tiny, small, 1B)")
    parser.add_argument("--config", help="a run config (training/configs/runs/65B.yaml); flags override it")
    parser.add_argument("--gpus", type=int, default=2048, help="number of GPUs (default 2048, the paper's 65B run)")
    parser.add_argument("--gpu", default=None, help=f"accelerator: {', '.join(ACCELERATORS)} (default {PAPER_GPU})")
    parser.add_argument("--mfu", type=float, help="model-FLOPs utilisation (default: the paper's for its sizes)")
    parser.add_argument("--tokens", type=float, help="training tokens (default: Table 2, else 20 per parameter)")
    parser.add_argument("--seq-len", type=int, dest="seq_len", help=f"sequence length (default {PAPER_SEQ_LEN})")
    parser.add_argument("--batch-tokens", type=float, dest="batch_tokens",
                        help=f"tokens per optimizer step (default {PAPER_BATCH_TOKENS:,})")
    parser.add_argument("--micro-batch", type=int, dest="micro_batch", help="sequences per GPU per micro-step")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(func=run)


__all__ = ["CHECKPOINTING", "MemoryEstimate", "PAPER_GPU_HOURS", "PAPER_TOKENS", "Plan", "STRATEGIES",
           "activation_bytes", "format_plan", "layer_activation_bytes", "make_plan", "model_state_bytes", "paper_mfu",
           "register"]
