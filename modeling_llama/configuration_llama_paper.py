"""LlamaPaperConfig: the hyper-parameters of LLaMA (Touvron et al. 2023, §2.2 and Table 2).

Field names are exactly those of transformers' `LlamaConfig`, so a config dict moves between the two; the
`model_type` is our own ("llama_paper") so that neither Auto registry hijacks the other.

This file is copied next to saved checkpoints for `trust_remote_code=True`: it imports only transformers and
its own siblings (relatively), never the `modeling_llama` package.
"""

from __future__ import annotations

import math

from transformers import PretrainedConfig

from .hub_push import KeepCardPushMixin

# Table 2 of the paper (dim, heads, layers); every other field keeps the paper's defaults.
# "tiny", "small" and "1B" are our own flavors for tests, CPU demos and single-GPU benchmarks.
PRESETS: dict[str, dict] = {
    "tiny": dict(hidden_size=64, num_attention_heads=4, num_hidden_layers=2),
    "small": dict(hidden_size=256, num_attention_heads=4, num_hidden_layers=4),
    "1B": dict(hidden_size=2048, num_attention_heads=16, num_hidden_layers=18),
    "7B": dict(hidden_size=4096, num_attention_heads=32, num_hidden_layers=32),
    "13B": dict(hidden_size=5120, num_attention_heads=40, num_hidden_layers=40),
    "33B": dict(hidden_size=6656, num_attention_heads=52, num_hidden_layers=60),
    "65B": dict(hidden_size=8192, num_attention_heads=64, num_hidden_layers=80),
}

# The parameter counts the paper reports (Table 2), for tests and `llama-paper info`.
PAPER_PARAMETERS: dict[str, float] = {"7B": 6.7e9, "13B": 13.0e9, "33B": 32.5e9, "65B": 65.2e9}


def swiglu_hidden_size(hidden_size: int, multiple_of: int = 256, ffn_dim_multiplier: float | None = None) -> int:
    """The paper's SwiGLU width: 2/3 * 4d (times Meta's optional multiplier), rounded up to `multiple_of`."""
    # Meta's reference code: int(2 * 4d / 3), then the multiplier, then round up.
    hidden = int(2 * (4 * hidden_size) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * math.ceil(hidden / multiple_of)


# transformers' LlamaConfig fields whose value the paper fixes. A LlamaConfig dict (`model_type: llama`) passes through
# LlamaPaperConfig when a transformers Llama folder is loaded; any other value is a model ours cannot compute.
_PAPER_FIXED = {
    "attention_bias": False,
    "mlp_bias": False,
    "hidden_act": "silu",
    "attention_dropout": 0.0,
    "pretraining_tp": 1,
    "rope_scaling": None,
}
_REFUSAL_FIX = (
    "LlamaPaperForCausalLM implements LLaMA (Touvron et al. 2023) only; load this checkpoint with transformers' "
    "own LlamaForCausalLM (AutoModelForCausalLM.from_pretrained) instead."
)


def _absorb_llama_fields(kwargs: dict, hidden_size: int, num_heads: int, rope_theta: float) -> float:
    """Take LlamaConfig-only fields out of `kwargs`, refusing features the paper's model lacks; returns rope_theta."""
    kwargs.pop("model_type", None)  # a LlamaConfig dict says "llama"; this class is "llama_paper" whatever it read
    rope = kwargs.pop("rope_parameters", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default" or set(rope) - {"rope_type", "type", "rope_theta"}:
        raise ValueError(f"RoPE scaling ({rope}) is not part of the paper's rotary embeddings. {_REFUSAL_FIX}")
    rope_theta = rope.get("rope_theta", rope_theta)
    for name, paper_value in _PAPER_FIXED.items():
        value = kwargs.pop(name, paper_value)
        if value != paper_value and not (name == "rope_scaling" and not value):
            what = "RoPE scaling" if name == "rope_scaling" else f"{name} = {value!r} (the paper: {paper_value!r})"
            raise ValueError(f"{what} is not part of LLaMA. {_REFUSAL_FIX}")
    head_dim = kwargs.pop("head_dim", None)
    if head_dim is not None and num_heads and head_dim != hidden_size // num_heads:
        raise ValueError(
            f"head_dim = {head_dim} differs from hidden_size / num_attention_heads = {hidden_size // num_heads}; "
            f"LLaMA's heads split the hidden size. {_REFUSAL_FIX}"
        )
    return rope_theta


class LlamaPaperConfig(KeepCardPushMixin, PretrainedConfig):
    """Configuration of a LLaMA model; defaults are the paper's 7B."""

    model_type = "llama_paper"
    keys_to_ignore_at_inference = ["cache"]
    # Same plans as transformers' Llama: `tp_plan="auto"` shards attention/MLP column- then row-wise.
    base_model_tp_plan = {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }
    base_model_pp_plan = {
        "embed_tokens": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "norm": (["hidden_states"], ["hidden_states"]),
    }

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 4096,
        intermediate_size: int | None = None,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 32,
        num_key_value_heads: int | None = None,
        max_position_embeddings: int = 2048,
        rms_norm_eps: float = 1e-6,
        rope_theta: float = 10000.0,
        tie_word_embeddings: bool = False,
        initializer_range: float = 0.02,
        use_cache: bool = True,
        bos_token_id: int | None = 1,
        eos_token_id: int | None = 2,
        pad_token_id: int | None = None,
        multiple_of: int = 256,
        **kwargs,
    ):
        rope_theta = _absorb_llama_fields(kwargs, hidden_size, num_attention_heads, rope_theta)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.multiple_of = multiple_of
        self.intermediate_size = (
            intermediate_size if intermediate_size is not None else swiglu_hidden_size(hidden_size, multiple_of)
        )
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads if num_key_value_heads is not None else num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.tie_word_embeddings = tie_word_embeddings
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        # Read by transformers' generic code (mask creation, cache classes); LLaMA has neither bias nor dropout.
        self.hidden_act = "silu"
        self.attention_dropout = 0.0
        self._validate()
        super().__init__(**kwargs)

    @property
    def head_dim(self) -> int:
        """Per-head width; cache classes read it from the config."""
        return self.hidden_size // self.num_attention_heads

    def _validate(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"LlamaPaperConfig.{name} must be a positive integer, got {value!r}.")
        for name in ("rms_norm_eps", "rope_theta", "initializer_range"):
            if not getattr(self, name) > 0:
                raise ValueError(f"LlamaPaperConfig.{name} must be positive, got {getattr(self, name)!r}.")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads}); pick a head count that divides it."
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be divisible by num_key_value_heads "
                f"({self.num_key_value_heads}) for grouped-query attention."
            )
        if self.head_dim % 2:
            raise ValueError(
                f"head_dim = hidden_size / num_attention_heads = {self.head_dim} is odd; rotary embeddings rotate "
                "pairs of channels, so it must be even."
            )

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "LlamaPaperConfig":
        """Build a named configuration: the paper's "7B", "13B", "33B", "65B", or "tiny", "small", "1B"."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
        return cls(**{**PRESETS[name], **overrides})


__all__ = ["LlamaPaperConfig", "PRESETS", "PAPER_PARAMETERS", "swiglu_hidden_size"]
