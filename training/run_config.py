"""The typed configuration of one pre-training run, loadable from YAML/JSON, with presets and CLI overrides.

A run is described by one flat `RunConfig`. Its values come, in increasing priority, from the dataclass
defaults, a named preset (`training/configs/runs/<name>.yaml`), a `--config FILE`, the explicit CLI flags, and
`--set key=value` overrides. Unknown keys are errors (a typo must not silently train the wrong thing).
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

RUN_PRESETS_DIR = Path(__file__).parent / "configs" / "runs"

# The paper warms up for 2000 steps of ~250k (1T tokens / 4M-token batches, §2.3); short runs need a relatively
# longer warm-up to be stable, so below `PAPER_WARMUP_STEPS / WARMUP_FRACTION` steps we warm up for 5% of the run.
PAPER_WARMUP_STEPS = 2000
WARMUP_FRACTION = 0.05

# resolved_accumulation warns when the token batch it can build is further than this from `batch_tokens`.
BATCH_TOKENS_TOLERANCE = 0.05

ACTIVATION_CHECKPOINTING_MODES = ("none", "full", "selective")
MIXED_PRECISION_MODES = ("no", "bf16", "fp16")


@dataclass
class RunConfig:
    """Every hyper-parameter of a pre-training run (paper §2.3 defaults where the paper gives one)."""

    # Model: a LlamaPaperConfig preset plus field overrides (e.g. {"max_position_embeddings": 256}).
    model_preset: str = "small"
    model: dict = field(default_factory=dict)
    attn_implementation: str = "sdpa"
    # Data: "demo" (the shipped two-source corpus) or a mixture YAML; tokenizer folder, or None to train one.
    mixture: str = "demo"
    tokenizer: str | None = None
    vocab_size: int = 4000
    seq_len: int = 256
    # Tokenize the mixture once with the data pipeline (training.data.pipeline) into OUTPUT/data and train from the
    # memory-mapped token shards; false: tokenize on the fly (PackedStream). Mixtures naming `tokens` always use shards.
    prepare_data: bool = False
    tokenizer_workers: int = 1  # processes tokenizing the training stream (pays off on many cores: data.encoding)
    # A tokenizer trained in the run reads at most this many training documents (interleaved by the mixture's
    # weights): a streamed web-scale mixture must not be read whole before step 0. null = every document.
    tokenizer_max_documents: int | None = 1_000_000
    # Batch: sequences per process per micro-step; accumulation is given directly or derived from batch_tokens.
    micro_batch_size: int = 8
    gradient_accumulation_steps: int | None = None
    batch_tokens: int | None = None
    # Optimisation (paper §2.3): AdamW(0.9, 0.95), wd 0.1, clip 1.0, warm-up then cosine to 10% of peak.
    max_steps: int = 300
    learning_rate: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int | None = None
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    max_nonfinite_steps: int = 5
    # Efficiency (paper §2.4).
    mixed_precision: str = "no"
    activation_checkpointing: str = "none"
    compile: bool = False
    peak_tflops: float | None = None
    # Parallelism beyond data parallel (training/parallel.py): tensor-parallel degree (null = the accelerate config's
    # parallelism_config_tp_size, else 1), sequence parallelism in the norm/residual regions when tp > 1.
    tensor_parallel: int | None = None
    sequence_parallel: bool = True
    # Write checkpoints in the background with torch.distributed.checkpoint (training/distributed_checkpoint.py).
    async_checkpoint: bool = False
    # Bookkeeping.
    seed: int = 0
    output_dir: str = "runs/llama-paper-demo"
    log_steps: int = 10
    save_steps: int = 0
    keep_checkpoints: int = 2
    tensorboard: bool = True
    max_shard_size: str = "5GB"
    # End of run: held-out evaluation and a sample.
    eval_batch_size: int = 8
    eval_max_batches: int | None = None
    sample_prompt: str = "ROMEO:"
    sample_tokens: int = 48

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce_number(f.name, f.type, getattr(self, f.name)))
        self.validate()
        self.model = _checked_model_overrides(self.model)

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field and how to fix it."""
        positive = ("vocab_size", "seq_len", "tokenizer_workers", "micro_batch_size", "max_steps", "log_steps",
                    "eval_batch_size")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"RunConfig.{name} must be a positive integer, got {value!r}.")
        if self.gradient_accumulation_steps is not None and self.batch_tokens is not None:
            raise ValueError("Set either gradient_accumulation_steps or batch_tokens, not both (one derives the other).")
        for name in ("gradient_accumulation_steps", "batch_tokens", "warmup_steps", "eval_max_batches",
                     "tokenizer_max_documents", "tensor_parallel"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < (0 if name == "warmup_steps" else 1)):
                raise ValueError(f"RunConfig.{name} must be a positive integer or null, got {value!r}.")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"RunConfig.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}.")
        if not self.learning_rate > 0 or not self.max_grad_norm > 0:
            raise ValueError("RunConfig.learning_rate and max_grad_norm must be positive.")
        if self.save_steps < 0 or self.keep_checkpoints < 1 or self.max_nonfinite_steps < 1:
            raise ValueError("save_steps must be >= 0 (0 = no intermediate checkpoints); keep_checkpoints and "
                             "max_nonfinite_steps must be >= 1.")
        if self.activation_checkpointing not in ACTIVATION_CHECKPOINTING_MODES:
            raise ValueError(f"activation_checkpointing must be one of {ACTIVATION_CHECKPOINTING_MODES}, "
                             f"got {self.activation_checkpointing!r}.")
        if self.mixed_precision not in MIXED_PRECISION_MODES:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION_MODES}, got {self.mixed_precision!r}.")
        if not isinstance(self.model, dict):
            raise ValueError(f"RunConfig.model must be a mapping of LlamaPaperConfig overrides, got {self.model!r}.")

    # --- derived values -------------------------------------------------------------------------------------------
    def resolved_warmup_steps(self) -> int:
        """Warm-up length: the configured value, else 2000 (paper) capped at 5% of a short run."""
        if self.warmup_steps is not None:
            return min(self.warmup_steps, self.max_steps)
        return max(1, min(PAPER_WARMUP_STEPS, math.ceil(WARMUP_FRACTION * self.max_steps)))

    def resolved_accumulation(self, world_size: int) -> int:
        """Micro-steps per optimizer step so that one step sees about `batch_tokens` tokens over all processes."""
        if self.gradient_accumulation_steps is not None:
            return self.gradient_accumulation_steps
        if self.batch_tokens is None:
            return 1
        per_micro_step = self.micro_batch_size * self.seq_len * world_size
        accumulation = max(1, round(self.batch_tokens / per_micro_step))
        actual = accumulation * per_micro_step
        if abs(actual - self.batch_tokens) > BATCH_TOKENS_TOLERANCE * self.batch_tokens:
            warnings.warn(f"batch_tokens={self.batch_tokens:,} is far from a multiple of micro_batch_size x seq_len x "
                          f"processes = {per_micro_step:,}: each optimizer step sees {actual:,} tokens "
                          f"({actual / self.batch_tokens:.2f}x). Change micro_batch_size (or the number of processes) "
                          "to get the batch you meant.", UserWarning, stacklevel=2)
        return accumulation

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-serialisable copy."""
        return dataclasses.asdict(self)

    # --- construction ---------------------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        """The valid keys of a run config file."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: "RunConfig | None" = None, source: str = "config") -> "RunConfig":
        """Apply `values` on top of `base` (or the defaults); unknown keys raise ValueError."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"Unknown run-config key(s) {unknown} in {source}; valid keys: {', '.join(cls.field_names())}.")
        merged = (base or cls()).to_dict()
        for key, value in values.items():
            if key == "model" and isinstance(value, dict):
                merged["model"] = {**merged["model"], **value}
            else:
                merged[key] = value
        return cls(**merged)

    @classmethod
    def from_file(cls, path: str | Path, base: "RunConfig | None" = None) -> "RunConfig":
        """Load a YAML or JSON run config (keys as in this dataclass)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Run config {path} does not exist; pass an existing YAML/JSON file to --config.")
        text = path.read_text()
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ValueError(f"Run config {path} must hold a mapping of keys to values.")
        return cls.from_dict(values, base=base, source=str(path))

    @classmethod
    def from_preset(cls, name: str) -> "RunConfig":
        """The run preset `training/configs/runs/<name>.yaml`."""
        path = RUN_PRESETS_DIR / f"{name}.yaml"
        if not path.is_file():
            raise ValueError(f"Unknown run preset {name!r}; available: {', '.join(available_presets())}.")
        return cls.from_file(path)


def _coerce_number(name: str, annotation: str, value: Any) -> Any:
    """`value` as the int/float its field declares: YAML reads `1e-3` (no dot) as a string, JSON gives 4e6 as float."""
    kind = annotation.replace(" | None", "")
    if kind not in ("int", "float") or (value is None and annotation.endswith("| None")):
        return value
    number = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise ValueError(f"RunConfig.{name} must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}.")
    if kind == "float":
        return float(number)
    if isinstance(number, float):
        if not number.is_integer():
            raise ValueError(f"RunConfig.{name} must be an integer, got {value!r}.")
        return int(number)
    return number


def _checked_model_overrides(overrides: dict) -> dict:
    """`model` overrides must name LlamaPaperConfig fields, with numbers as numbers: a typo (`hiden_size`) would
    otherwise be stored and ignored, and the run would train the preset's model."""
    from modeling_llama import LlamaPaperConfig

    defaults = LlamaPaperConfig().to_dict()
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        valid = ", ".join(sorted(key for key in defaults if not key.startswith("_")))
        raise ValueError(f"Unknown model key(s) {unknown} in RunConfig.model; valid keys: {valid}.")
    checked = {}
    for key, value in overrides.items():
        default = defaults[key]
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            value = _coerce_number(f"model.{key}", type(default).__name__, value)
        checked[key] = value
    return checked


def available_presets() -> list[str]:
    """Names usable with --preset."""
    return sorted(p.stem for p in RUN_PRESETS_DIR.glob("*.yaml"))


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one `key=value` override; the value is read as YAML (numbers, booleans, null, lists, mappings)."""
    if "=" not in text:
        raise ValueError(f"Override {text!r} must look like key=value, e.g. --set learning_rate=1e-3.")
    key, raw = text.split("=", 1)
    key = key.strip()
    if key.startswith("model."):  # --set model.hidden_size=128 edits one model field
        return "model", {key[len("model."):]: yaml.safe_load(raw)}
    return key, yaml.safe_load(raw)


def load_run_config(preset: str | None = None, config_file: str | None = None, flags: dict[str, Any] | None = None,
                    overrides: list[str] | None = None, base: RunConfig | None = None) -> RunConfig:
    """Build the run config: `base` or preset, then file, then explicit flags (None = not given), then overrides."""
    config = base or (RunConfig.from_preset(preset) if preset else RunConfig())
    if config_file:
        config = RunConfig.from_file(config_file, base=config)
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    if given:
        config = RunConfig.from_dict(given, base=config, source="command-line flags")
    for text in overrides or []:
        key, value = parse_override(text)
        config = RunConfig.from_dict({key: value}, base=config, source=f"--set {text}")
    return config


__all__ = ["RunConfig", "available_presets", "load_run_config", "parse_override", "RUN_PRESETS_DIR"]
