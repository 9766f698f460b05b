"""`llama-paper plan`: what a pre-training run costs (paper §2.4 and §5): FLOPs, memory per GPU, steps, days.

Throughput model (a prediction: nothing in it is taken from the paper's GPU-hours, which are only compared against):
  step time = compute + TP communication + the DP communication that backward cannot hide
  compute   = tokens of the GPU's data-parallel rank x FLOPs per token / tp / (MFU x peak), with MFU an explicit input
              (`--mfu`) whose default, DEFAULT_MFU = 0.523, is measured: benchmarks/gpu_mfu.py, preset 1B, compiled
              bf16 training step on one H100 (benchmarks/RESULTS.md). FLOPs per token are
              `modeling_llama.flops.flops_per_token` (6N + PaLM's attention term 12·L·d·T); full activation
              checkpointing adds a forward pass (x 4/3) that MFU does not count.
  TP        = Megatron-style tensor parallelism (Korthikanti et al. 2022): per layer, forward 2 all-gathers + 2
              reduce-scatters of the (tokens x d) bf16 activations with sequence parallelism, or 2 all-reduces of the
              same volume without; backward the same again; full recomputation repeats the forward's: 8 (12)
              collectives x 2d bytes x (tp-1)/tp per token and layer, over NVLink inside a node, on the critical path.
  DP        = FSDP/ZeRO-3 over the dp ranks: all-gather of the bf16 weights in forward and backward and a
              reduce-scatter of the gradients, 3 x 2 bytes x (Ψ/tp) x (dp-1)/dp per step and GPU, over the
              inter-node network (NVLink when dp x tp fits in one node); overlapped with backward (2/3 of compute):
              only what exceeds it is exposed.
The bandwidths are stated assumptions per accelerator (NETWORKS: NCCL bus bandwidth of NVLink, 80% of InfiniBand's
line rate per GPU). The predicted MFU is MFU x compute / step time. `--mfu` given with `--no-communication` is
taken as end-to-end (the paper's "about 48%" of §2.4 is: it already includes communication).

The layout (tp, sp, dp = dp_shard, micro-batch, activation checkpointing) is chosen, unless given, as the fastest
predicted step that fits in the GPU's memory: tp a power of two within a node dividing the heads, dp dividing the
sequences of a batch, sequence parallelism on with tp > 1, the cheapest checkpointing that fits.

Restarts (§ elastic restarts in the README): expected failures = GPUs x wall hours / MTBF per GPU, an assumption
(DEFAULT_GPU_MTBF_HOURS = 50,000 h: Llama 3's report, 419 unexpected interruptions in 54 days on 16,384 GPUs, gives
~50,700 GPU-hours per interruption); each costs the restart (DEFAULT_RESTART_MINUTES) plus on average half a
checkpoint interval of recomputed work.

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
bf16 logits alive next to them (6V). Each GPU holds a micro-batch of `micro_batch` sequences.
Tensor parallelism divides the weights by tp (norm weights, negligible, stay whole) and the activations inside the
attention and MLP blocks (q, k, v, attention output, SwiGLU; vocab-parallel logits); the rest (layer input, norms,
residual outputs: 16d of "none", 6d of "selective", all of "full") is replicated across the tp ranks unless sequence
parallelism splits it too (Korthikanti et al. 2022, Table 2).
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


@dataclass(frozen=True)
class Network:
    """Achievable collective bandwidth per GPU (bytes/s): inside a node (NVLink) and between nodes."""

    intra_node: float
    inter_node: float
    source: str


# Assumptions, stated: NCCL all-reduce bus bandwidth of NVLink 3 (A100, ~230 GB/s of 300 GB/s per direction) and
# NVLink 4 (H100/H200, ~370 GB/s of 450); between nodes 80% of one 200 Gb/s HDR (A100 clusters such as the paper's)
# or 400 Gb/s NDR (H100) InfiniBand port per GPU.
NETWORKS: dict[str, Network] = {
    "a100": Network(230e9, 0.8 * 200e9 / 8, "NVLink 3 ~230 GB/s; 200 Gb/s InfiniBand per GPU at 80%"),
    "h100": Network(370e9, 0.8 * 400e9 / 8, "NVLink 4 ~370 GB/s; 400 Gb/s InfiniBand per GPU at 80%"),
}


def default_network(gpu: str) -> Network:
    """The stated bandwidth assumption for an accelerator key (A100 or H100-class)."""
    return NETWORKS["a100" if gpu.startswith("a100") else "h100"]

# Table 2: training tokens; §5 (carbon footprint table): GPU-hours on A100-80GB.
PAPER_TOKENS: dict[str, float] = {"7B": 1.0e12, "13B": 1.0e12, "33B": 1.4e12, "65B": 1.4e12}
PAPER_GPU_HOURS: dict[str, float] = {"7B": 82_432, "13B": 135_168, "33B": 530_432, "65B": 1_022_362}
PAPER_GPU = "a100-80gb"
PAPER_SEQ_LEN = 2048
PAPER_BATCH_TOKENS = 2048 * 2048  # "4M tokens": 2048 sequences of 2048 tokens
# Measured, not derived from the paper: benchmarks/gpu_mfu.py --preset 1B --seq-len 2048 --batch 4, compiled bf16
# training step on one H100 80GB HBM3, 75,458 tokens/s = 52.3% of 989 TFLOP/s (benchmarks/RESULTS.md, 2026-11-28).
DEFAULT_MFU = 0.523
DEFAULT_GPUS_PER_NODE = 8
DEFAULT_GPU_MTBF_HOURS = 50_000.0  # assumption: Llama 3 report, 419 interruptions / (16,384 GPUs x 54 days)
DEFAULT_RESTART_MINUTES = 10.0  # assumption: detect, rendezvous again, reload the checkpoint, warm up
DEFAULT_CHECKPOINT_MINUTES = 30.0  # assumption: checkpoint interval; a failure loses half of one on average
DP_OVERLAP = 2 / 3  # the share of compute (backward) that DP communication hides behind
CHINCHILLA_TOKENS_PER_PARAMETER = 20  # default token budget for presets outside Table 2

STRATEGIES = ("DDP", "ZeRO-1", "ZeRO-2", "ZeRO-3", "FSDP")
CHECKPOINTING = ("none", "selective", "full")


def paper_mfu(preset: str, seq_len: int = PAPER_SEQ_LEN) -> float:
    """MFU the paper achieved for a Table 2 size, from its GPU-hours (§5) and token count: for comparison only, never
    a default of the prediction."""
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


def model_state_bytes(config: LlamaPaperConfig, strategy: str, gpus: int,
                      tp: int = 1) -> tuple[float, float, float, float]:
    """(parameters, gradients, optimizer, working set) in bytes per GPU for a sharding strategy over `gpus`
    data-parallel ranks, each holding 1/tp of the model (module docstring)."""
    psi, n = count_parameters(config) / tp, gpus
    if strategy == "DDP":
        return 2 * psi, 2 * psi, 12 * psi, 0.0
    if strategy == "ZeRO-1":
        return 2 * psi, 2 * psi, 12 * psi / n, 0.0
    if strategy == "ZeRO-2":
        return 2 * psi, 2 * psi / n, 12 * psi / n, 0.0
    unit = max(count_parameters(config, include_embeddings=False) / config.num_hidden_layers,
               config.vocab_size * config.hidden_size) / tp
    working_set = 3 * 2 * unit  # two units of bf16 weights gathered + one unit of bf16 gradients
    if strategy == "ZeRO-3":
        return 2 * psi / n, 2 * psi / n, 12 * psi / n, working_set
    if strategy == "FSDP":
        return 4 * psi / n, 4 * psi / n, 8 * psi / n, working_set
    raise ValueError(f"Unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}.")


# Per token and layer, the activation bytes outside the tensor-parallel blocks (layer input, norms, residual outputs):
# replicated over the tp ranks unless sequence parallelism splits them (multiples of d).
_REPLICATED_D = {"none": 16, "selective": 6, "full": 2}


def layer_activation_bytes(config: LlamaPaperConfig, checkpointing: str, tp: int = 1, sp: bool = False) -> float:
    """Activation bytes one decoder layer keeps per token for backward on one GPU (module docstring for the terms)."""
    d, f = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * config.head_dim
    per_layer = {
        "none": 2 * (4 * d + 2 * d + 2 * d) + (2 * d + 4 * kv + 2 * d) + 8 * f,
        "selective": 2 * d + (2 * d + 4 * kv) + 2 * d + 2 * d + 4 * f + 2 * d,
        "full": 2 * d,
    }
    if checkpointing not in per_layer:
        raise ValueError(f"Unknown checkpointing mode {checkpointing!r}; choose one of {', '.join(CHECKPOINTING)}.")
    replicated = _REPLICATED_D[checkpointing] * d
    return (per_layer[checkpointing] - replicated) / tp + replicated / (tp if sp else 1)


def activation_bytes(config: LlamaPaperConfig, tokens: int, checkpointing: str, tp: int = 1,
                     sp: bool = False) -> float:
    """Activation memory in bytes for `tokens` tokens on one GPU: all layers, the head, and any recomputation."""
    layers = config.num_hidden_layers * layer_activation_bytes(config, checkpointing, tp, sp)
    # final norm (replicated unless SP); fp32 log-probs + bf16 logits (vocab-parallel under TP)
    head = 8 * config.hidden_size / (tp if sp else 1) + 6 * config.vocab_size / tp
    recompute = layer_activation_bytes(config, "none", tp, sp) if checkpointing == "full" else 0  # the layer redone
    return tokens * (layers + head + recompute)


# --- throughput: compute + communication ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """How the GPUs are used: tensor-parallel size, sequence parallelism, FSDP ranks, micro-batch, checkpointing."""

    tp: int
    sp: bool
    dp: int
    micro_batch: int
    gradient_accumulation: int
    activation_checkpointing: str

    @property
    def mesh(self) -> dict[str, int]:
        """The device mesh as run_info.json names it (FSDP over all data-parallel ranks)."""
        return {"dp_replicate": 1, "dp_shard": self.dp, "tp": self.tp}


@dataclass
class StepTime:
    """Seconds per optimizer step on every GPU, by the module docstring's model."""

    compute: float
    tensor_parallel: float
    data_parallel: float
    data_parallel_exposed: float

    @property
    def total(self) -> float:
        """Compute plus the communication nothing hides."""
        return self.compute + self.tensor_parallel + self.data_parallel_exposed


def tp_bytes_per_token(config: LlamaPaperConfig, tp: int, checkpointing: str) -> float:
    """Bytes each GPU sends per token of its data-parallel rank in TP collectives (all layers, forward + backward)."""
    collectives = 12 if checkpointing == "full" else 8  # the recomputed forward repeats its 4 collectives
    return config.num_hidden_layers * collectives * 2 * config.hidden_size * (tp - 1) / tp


def step_time(config: LlamaPaperConfig, layout: Layout, seq_len: int, mfu: float, peak: float, network: Network,
              gpus_per_node: int, communication: bool = True) -> StepTime:
    """Predicted seconds per optimizer step (module docstring: compute, TP, exposed DP communication)."""
    tokens = layout.micro_batch * layout.gradient_accumulation * seq_len  # per data-parallel rank
    recompute = 4 / 3 if layout.activation_checkpointing == "full" else 1.0
    compute = tokens * flops_per_token(config, seq_len) / layout.tp / (mfu * peak) * recompute
    if not communication:
        return StepTime(compute, 0.0, 0.0, 0.0)
    tp_time = tokens * tp_bytes_per_token(config, layout.tp, layout.activation_checkpointing) / network.intra_node
    dp_bytes = 3 * 2 * count_parameters(config) / layout.tp * (layout.dp - 1) / layout.dp
    dp_bandwidth = network.intra_node if layout.dp * layout.tp <= gpus_per_node else network.inter_node
    dp_time = dp_bytes / dp_bandwidth
    return StepTime(compute, tp_time, dp_time, max(0.0, dp_time - DP_OVERLAP * compute))


def layout_memory(config: LlamaPaperConfig, layout: Layout, seq_len: int, strategy: str = "FSDP",
                  sp: bool | None = None, checkpointing: str | None = None) -> MemoryEstimate:
    """Bytes per GPU of a layout (optionally with another SP setting or checkpointing mode)."""
    sp = layout.sp if sp is None else sp
    mode = checkpointing or layout.activation_checkpointing
    return MemoryEstimate(*model_state_bytes(config, strategy, layout.dp, layout.tp),
                          activation_bytes(config, layout.micro_batch * seq_len, mode, layout.tp, sp))


def candidate_layouts(config: LlamaPaperConfig, gpus: int, sequences: int, gpus_per_node: int,
                      tp: int | None = None, sp: bool | None = None, micro_batch: int | None = None,
                      checkpointing: str | None = None):
    """Every layout the planner may choose from (or the one the given sizes pin down)."""
    sizes = [tp] if tp else [t for t in (1, 2, 4, 8, 16, 32) if t <= gpus_per_node]
    for t in sizes:
        if gpus % t or config.num_attention_heads % t or config.num_key_value_heads % t:
            continue
        dp = gpus // t
        per_rank = max(1, sequences // dp)
        micro = [micro_batch] if micro_batch else sorted({m for m in (per_rank, 8, 4, 2, 1) if m <= per_rank},
                                                          reverse=True)
        for m in micro:
            for mode in ([checkpointing] if checkpointing else CHECKPOINTING):
                yield Layout(t, (t > 1) if sp is None else sp, dp, m, max(1, math.ceil(per_rank / m)), mode)


def choose_layout(config: LlamaPaperConfig, gpus: int, seq_len: int, sequences: int, memory: int | None,
                  mfu: float, peak: float, network: Network, gpus_per_node: int, communication: bool = True,
                  **given) -> Layout:
    """The fastest predicted layout that fits in `memory` bytes (ties: smaller tp, less recomputation)."""
    layouts = list(candidate_layouts(config, gpus, sequences, gpus_per_node, **given))
    if not layouts:
        raise ValueError(f"No tensor-parallel size fits {gpus} GPUs, {gpus_per_node} per node and "
                         f"{config.num_attention_heads} heads: pass --tp dividing both, or another --gpus.")
    fitting = [lay for lay in layouts if memory is None or layout_memory(config, lay, seq_len).total <= memory]
    pool = fitting or layouts  # nothing fits: report the fastest anyway, with a note
    return min(pool, key=lambda lay: (round(step_time(config, lay, seq_len, mfu, peak, network, gpus_per_node,
                                                       communication).total, 9),
                                      lay.tp, CHECKPOINTING.index(lay.activation_checkpointing), -lay.micro_batch))


@dataclass
class Restarts:
    """Expected failures over the run and the time they cost, from an assumed MTBF per GPU."""

    gpu_mtbf_hours: float
    restart_minutes: float
    checkpoint_minutes: float
    expected_failures: float
    lost_hours: float
    lost_fraction: float


def expected_restarts(gpus: int, wall_hours: float, gpu_mtbf_hours: float = DEFAULT_GPU_MTBF_HOURS,
                      restart_minutes: float = DEFAULT_RESTART_MINUTES,
                      checkpoint_minutes: float = DEFAULT_CHECKPOINT_MINUTES) -> Restarts:
    """Failures = GPUs x hours / MTBF per GPU; each costs a restart plus half a checkpoint interval of lost work."""
    if gpu_mtbf_hours <= 0:
        raise ValueError(f"--gpu-mtbf-hours must be > 0, got {gpu_mtbf_hours}.")
    failures = gpus * wall_hours / gpu_mtbf_hours
    lost = failures * (restart_minutes + checkpoint_minutes / 2) / 60
    return Restarts(gpu_mtbf_hours, restart_minutes, checkpoint_minutes, failures, lost,
                    lost / wall_hours if wall_hours else 0.0)


@dataclass
class Plan:
    """Everything `llama-paper plan` reports for one run."""

    preset: str
    gpu: str
    gpus: int
    mfu: float  # predicted end-to-end: base_mfu x compute / step time
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
    base_mfu: float = 0.0  # the input: one GPU's compute MFU, before communication
    layout: Layout | None = None
    step: StepTime | None = None
    network: Network | None = None
    restarts: Restarts | None = None
    memory: dict[str, dict[str, MemoryEstimate]] = field(default_factory=dict)
    memory_sp: dict[str, dict[str, MemoryEstimate]] = field(default_factory=dict)  # FSDP: "sp"/"no sp" x mode
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable, with per-strategy totals in GiB."""
        data = asdict(self)
        data["memory_gib"] = {s: {c: m.total / GiB for c, m in modes.items()} for s, modes in self.memory.items()}
        data["memory_sp_gib"] = {s: {c: m.total / GiB for c, m in modes.items()} for s, modes in self.memory_sp.items()}
        if self.layout:
            data["mesh"] = self.layout.mesh
        return data


def make_plan(preset: str, gpus: int, gpu: str = PAPER_GPU, mfu: float | None = None, tokens: float | None = None,
              seq_len: int = PAPER_SEQ_LEN, batch_tokens: int = PAPER_BATCH_TOKENS,
              micro_batch: int | None = None, tp: int | None = None, sp: bool | None = None,
              activation_checkpointing: str | None = None, gpus_per_node: int = DEFAULT_GPUS_PER_NODE,
              network: Network | None = None, communication: bool = True,
              gpu_mtbf_hours: float = DEFAULT_GPU_MTBF_HOURS, restart_minutes: float = DEFAULT_RESTART_MINUTES,
              checkpoint_minutes: float = DEFAULT_CHECKPOINT_MINUTES) -> Plan:
    """Plan a pre-training run of a model preset on `gpus` accelerators of kind `gpu` (module docstring)."""
    if gpus < 1 or gpus_per_node < 1:
        raise ValueError(f"--gpus and --gpus-per-node must be >= 1, got {gpus} and {gpus_per_node}.")
    if seq_len < 1 or batch_tokens < seq_len:
        raise ValueError(f"Need seq_len >= 1 and batch_tokens >= seq_len, got {seq_len} and {batch_tokens}.")
    accelerator = get_accelerator(gpu)
    if accelerator.peak_bf16_flops is None:
        raise ValueError(f"{accelerator.description} has no known peak FLOP/s; plan for one of "
                         f"{', '.join(k for k, a in ACCELERATORS.items() if a.peak_bf16_flops)}.")
    if tp is not None and (tp < 1 or tp > gpus or gpus % tp):
        raise ValueError(f"--tp must divide --gpus ({gpus}), got {tp}.")
    config = LlamaPaperConfig.from_preset(preset)
    if mfu is None:
        mfu, mfu_source = DEFAULT_MFU, "measured: gpu_mfu.py, 1B on one H100 (benchmarks/RESULTS.md)"
    else:
        mfu_source = "given"
    if not 0 < mfu <= 1:
        raise ValueError(f"--mfu must be in (0, 1], got {mfu}.")
    if not communication:
        mfu_source += ", end-to-end (no communication modelled)"
    if tokens is None:
        tokens = PAPER_TOKENS.get(preset, CHINCHILLA_TOKENS_PER_PARAMETER * count_parameters(config))
    network = network or default_network(accelerator.key)
    peak = accelerator.peak_bf16_flops
    sequences = batch_tokens // seq_len
    layout = choose_layout(config, gpus, seq_len, sequences, accelerator.memory_bytes, mfu, peak, network,
                           gpus_per_node, communication, tp=tp, sp=sp, micro_batch=micro_batch,
                           checkpointing=activation_checkpointing)
    step = step_time(config, layout, seq_len, mfu, peak, network, gpus_per_node, communication)
    tokens_per_step_per_gpu = layout.micro_batch * layout.gradient_accumulation * seq_len / layout.tp
    throughput = tokens_per_step_per_gpu / step.total
    per_token = flops_per_token(config, seq_len)
    days = tokens / (throughput * gpus) / 86400
    notes: list[str] = []
    if gpus // layout.tp > sequences:
        notes.append(f"{gpus // layout.tp} data-parallel ranks exceed the {sequences} sequences of a batch.")
    if accelerator.memory_bytes and layout_memory(config, layout, seq_len).total > accelerator.memory_bytes:
        notes.append("No layout fits in the GPU's memory: shown is the fastest; add GPUs or offload.")
    memory = {strategy: {mode: layout_memory(config, layout, seq_len, strategy, checkpointing=mode)
                         for mode in CHECKPOINTING} for strategy in STRATEGIES}
    memory_sp = {label: {mode: layout_memory(config, layout, seq_len, "FSDP", sp=on, checkpointing=mode)
                         for mode in CHECKPOINTING} for label, on in (("no sp", False), ("sp", True))}
    return Plan(
        preset=preset, gpu=accelerator.key, gpus=gpus, mfu=throughput * per_token / peak, mfu_source=mfu_source,
        tokens=float(tokens), seq_len=seq_len,
        batch_tokens=batch_tokens, parameters=count_parameters(config), flops_per_token=per_token,
        steps=math.ceil(tokens / batch_tokens), micro_batch=layout.micro_batch,
        gradient_accumulation=layout.gradient_accumulation, tokens_per_s_per_gpu=throughput, days=days,
        gpu_hours=tokens / throughput / 3600, gpu_memory_bytes=accelerator.memory_bytes, base_mfu=mfu,
        layout=layout, step=step, network=network,
        restarts=expected_restarts(gpus, days * 24, gpu_mtbf_hours, restart_minutes, checkpoint_minutes),
        memory=memory, memory_sp=memory_sp, notes=notes)


def paper_comparison(gpus: int = 2048, gpu: str = PAPER_GPU, **assumptions) -> list[dict[str, Any]]:
    """The prediction for the paper's four sizes next to its GPU-hours (§5); the paper's figures are only compared."""
    rows = []
    for preset, paper_hours in PAPER_GPU_HOURS.items():
        plan = make_plan(preset, gpus=gpus, gpu=gpu, **assumptions)
        rows.append({"preset": preset, "layout": plan.layout.mesh, "sp": plan.layout.sp,
                     "checkpointing": plan.layout.activation_checkpointing, "mfu": plan.mfu,
                     "predicted_gpu_hours": plan.gpu_hours, "paper_gpu_hours": paper_hours,
                     "error": plan.gpu_hours / paper_hours - 1, "days": plan.days,
                     "sensitivity": sensitivities(preset, gpus, gpu, **assumptions)})
    return rows


def sensitivities(preset: str, gpus: int, gpu: str = PAPER_GPU, **assumptions) -> dict[str, float]:
    """Elasticity of the predicted GPU-hours to each assumption: d ln(hours) / d ln(x), by a 10% change of x."""
    base = make_plan(preset, gpus=gpus, gpu=gpu, **assumptions).gpu_hours
    network = assumptions.pop("network", None) or default_network(get_accelerator(gpu).key)
    mfu = assumptions.pop("mfu", None) or DEFAULT_MFU
    varied = {
        "mfu": dict(mfu=mfu * 1.1, network=network),
        "intra_node_bandwidth": dict(mfu=mfu, network=Network(network.intra_node * 1.1, network.inter_node, "")),
        "inter_node_bandwidth": dict(mfu=mfu, network=Network(network.intra_node, network.inter_node * 1.1, "")),
    }
    return {name: math.log(make_plan(preset, gpus=gpus, gpu=gpu, **assumptions, **change).gpu_hours / base)
            / math.log(1.1) for name, change in varied.items()}


def format_plan(plan: Plan) -> str:
    """The human-readable report."""
    paper = PAPER_PARAMETERS.get(plan.preset)
    lay, step, net, rs = plan.layout, plan.step, plan.network, plan.restarts
    lines = [
        f"LLaMA {plan.preset} on {plan.gpus} x {get_accelerator(plan.gpu).description}",
        f"  parameters          {plan.parameters / 1e9:,.2f} B" + (f" (paper: {paper / 1e9:.1f} B)" if paper else ""),
        f"  FLOPs per token     {plan.flops_per_token:.3e} (training, seq {plan.seq_len}: 6N + attention)",
        f"  tokens              {plan.tokens:.3e} in {plan.steps:,} steps of {plan.batch_tokens:,} tokens",
        f"  layout              tp {lay.tp} x dp_shard {lay.dp} (FSDP), sequence parallel "
        f"{'on' if lay.sp else 'off'}, activation checkpointing {lay.activation_checkpointing}",
        f"  per GPU and step    micro-batch {plan.micro_batch} x {plan.seq_len} tokens, "
        f"gradient accumulation {plan.gradient_accumulation}",
        f"  MFU (input)         {plan.base_mfu:.3f} ({plan.mfu_source})",
        f"  step time           {step.total:.2f} s = compute {step.compute:.2f} + TP {step.tensor_parallel:.2f} + "
        f"exposed DP {step.data_parallel_exposed:.2f} (DP {step.data_parallel:.2f} s, overlapped with backward)",
        f"  network (assumed)   {net.intra_node / 1e9:.0f} GB/s in a node, {net.inter_node / 1e9:.0f} GB/s between "
        f"nodes per GPU ({net.source})",
        f"  MFU (predicted)     {plan.mfu:.3f}",
        f"  tokens/s/GPU        {plan.tokens_per_s_per_gpu:,.0f}",
        f"  wall-clock          {plan.days:,.1f} days",
        f"  GPU-hours           {plan.gpu_hours:,.0f}" + (
            f" (paper: {PAPER_GPU_HOURS[plan.preset]:,}, {plan.gpu_hours / PAPER_GPU_HOURS[plan.preset] - 1:+.0%})"
            if plan.preset in PAPER_GPU_HOURS and plan.gpu == PAPER_GPU else ""),
        f"  restarts            {rs.expected_failures:.1f} expected (assumed MTBF {rs.gpu_mtbf_hours:,.0f} h per GPU), "
        f"{rs.lost_hours:.1f} h lost ({rs.lost_fraction:.1%}: {rs.restart_minutes:.0f} min restart + half of a "
        f"{rs.checkpoint_minutes:.0f} min checkpoint interval each)",
        "",
        "Memory per GPU in GiB (weights + grads + optimizer + ZeRO-3/FSDP working set + activations) at this tp and "
        f"micro-batch, of {plan.gpu_memory_bytes / GiB:.0f} GiB:" if plan.gpu_memory_bytes else
        "Memory per GPU in GiB:",
        f"  {'strategy':<8} {'states':>9} " + " ".join(f"{'act. ' + m:>16}" for m in CHECKPOINTING),
    ]
    rows = [(s, modes) for s, modes in plan.memory.items()]
    if lay.tp > 1:
        rows += [(f"FSDP {label}", modes) for label, modes in plan.memory_sp.items()]
    for name, modes in rows:
        any_mode = modes[CHECKPOINTING[0]]
        states = any_mode.total - any_mode.activations
        cells = []
        for mode in CHECKPOINTING:
            total = modes[mode].total
            fits = "" if plan.gpu_memory_bytes is None else (" ok" if total <= plan.gpu_memory_bytes else " --")
            cells.append(f"{total / GiB:>13,.1f}{fits}")
        lines.append(f"  {name:<11} {states / GiB:>6,.1f} " + " ".join(cells))
    lines.append("  (ok = fits, -- = does not fit; activations for the micro-batch, bf16, memory-efficient attention;"
                 " FSDP sp / no sp: with and without sequence parallelism)")
    lines.extend(f"note: {n}" for n in plan.notes)
    return "\n".join(lines)


def format_paper_comparison(rows: list[dict[str, Any]]) -> str:
    """The four sizes: layout, predicted MFU and GPU-hours, the paper's, the error, the dominant assumption."""
    lines = [f"{'size':<5} {'layout':<22} {'ckpt':<9} {'MFU':>6} {'predicted GPU-h':>16} {'paper GPU-h':>12} "
             f"{'error':>7}  dominant assumption (elasticity of GPU-hours)"]
    for r in rows:
        mesh = r["layout"]
        dominant = max(r["sensitivity"], key=lambda k: abs(r["sensitivity"][k]))
        layout = f"tp {mesh['tp']} x dp {mesh['dp_shard']}{' +sp' if r['sp'] else ''}"
        lines.append(f"{r['preset']:<5} {layout:<22} {r['checkpointing']:<9} {r['mfu']:>6.3f} "
                     f"{r['predicted_gpu_hours']:>16,.0f} {r['paper_gpu_hours']:>12,} {r['error']:>+7.1%}  "
                     f"{dominant} ({r['sensitivity'][dominant]:+.2f}; "
                     + ", ".join(f"{k} {v:+.2f}" for k, v in r["sensitivity"].items() if k != dominant) + ")")
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
    # the run-config keys of training/parallel.py's tensor/sequence parallelism
    if values.get("tensor_parallel"):
        plan_args["tp"] = int(values["tensor_parallel"])
    if values.get("sequence_parallel") is not None:
        plan_args["sp"] = bool(values["sequence_parallel"])
    if values.get("activation_checkpointing") in CHECKPOINTING:
        plan_args["activation_checkpointing"] = values["activation_checkpointing"]
    return plan_args


PLAN_FLAGS = ("preset", "gpu", "mfu", "tokens", "seq_len", "batch_tokens", "micro_batch", "tp", "sp",
              "activation_checkpointing", "gpus_per_node", "communication", "gpu_mtbf_hours", "restart_minutes",
              "checkpoint_minutes")


def run(args: argparse.Namespace) -> int:
    """Entry point of `llama-paper plan`."""
    values: dict[str, Any] = _from_run_config(args.config) if args.config else {}
    for key in PLAN_FLAGS:
        value = getattr(args, key)
        if value is not None:
            values[key] = value
    if "batch_tokens" in values:
        values["batch_tokens"] = int(values["batch_tokens"])
    if args.paper:  # bad flags raise ValueError: llama-paper prints one line, exit 2
        values.pop("preset", None)
        rows = paper_comparison(gpus=args.gpus, **{"gpu": PAPER_GPU, **values})
        print(json.dumps(rows, indent=2) if args.json else format_paper_comparison(rows))
        return 0
    if "preset" not in values:
        raise SystemExit("llama-paper plan: give --preset (e.g. 65B), a --config run file with model_preset, or "
                         "--paper.")
    plan = make_plan(gpus=args.gpus, **values)
    print(json.dumps(plan.to_dict(), indent=2) if args.json else format_plan(plan))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `plan` subcommand."""
    parser = subparsers.add_parser("plan", help="Estimate FLOPs, layout, memory per GPU, steps, days, GPU-hours and "
                                                "restarts of a run.", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", help="model preset: 7B, 13B, 33B, 65B (or tiny, small, 1B)")
    parser.add_argument("--config", help="a run config (training/configs/runs/65B.yaml); flags override it")
    parser.add_argument("--paper", action="store_true",
                        help="predict the paper's four sizes and compare with its GPU-hours (§5)")
    parser.add_argument("--gpus", type=int, default=2048, help="number of GPUs (default 2048, the paper's 65B run)")
    parser.add_argument("--gpus-per-node", type=int, dest="gpus_per_node",
                        help=f"GPUs per node: the largest tensor-parallel size (default {DEFAULT_GPUS_PER_NODE})")
    parser.add_argument("--gpu", default=None, help=f"accelerator: {', '.join(ACCELERATORS)} (default {PAPER_GPU})")
    parser.add_argument("--mfu", type=float, help=f"one GPU's compute MFU before communication (default "
                                                  f"{DEFAULT_MFU}, measured: benchmarks/RESULTS.md)")
    parser.add_argument("--no-communication", dest="communication", action="store_false", default=None,
                        help="take --mfu as end-to-end: model no TP/DP communication")
    parser.add_argument("--tp", type=int, help="tensor-parallel size (default: chosen)")
    parser.add_argument("--sp", action=argparse.BooleanOptionalAction, default=None,
                        help="sequence parallelism (default: on with tp > 1)")
    parser.add_argument("--activation-checkpointing", choices=CHECKPOINTING, dest="activation_checkpointing",
                        help="default: the cheapest that fits")
    parser.add_argument("--tokens", type=float, help="training tokens (default: Table 2, else 20 per parameter)")
    parser.add_argument("--seq-len", type=int, dest="seq_len", help=f"sequence length (default {PAPER_SEQ_LEN})")
    parser.add_argument("--batch-tokens", type=float, dest="batch_tokens",
                        help=f"tokens per optimizer step (default {PAPER_BATCH_TOKENS:,})")
    parser.add_argument("--micro-batch", type=int, dest="micro_batch", help="sequences per GPU per micro-step")
    parser.add_argument("--gpu-mtbf-hours", type=float, dest="gpu_mtbf_hours",
                        help=f"assumed mean time between failures per GPU (default {DEFAULT_GPU_MTBF_HOURS:,.0f} h)")
    parser.add_argument("--restart-minutes", type=float, dest="restart_minutes",
                        help=f"time one restart costs (default {DEFAULT_RESTART_MINUTES:.0f})")
    parser.add_argument("--checkpoint-minutes", type=float, dest="checkpoint_minutes",
                        help=f"checkpoint interval (default {DEFAULT_CHECKPOINT_MINUTES:.0f})")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(func=run)


__all__ = ["CHECKPOINTING", "DEFAULT_MFU", "Layout", "MemoryEstimate", "NETWORKS", "Network", "PAPER_GPU_HOURS",
           "PAPER_TOKENS", "Plan", "STRATEGIES", "activation_bytes", "choose_layout", "expected_restarts",
           "format_paper_comparison", "format_plan", "layer_activation_bytes", "make_plan", "model_state_bytes",
           "paper_comparison", "paper_mfu", "register", "sensitivities", "step_time"]
