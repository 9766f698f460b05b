"""Meta's original LLaMA checkpoint layout: key names, model-parallel split axes, and the rotary row permutation.

Meta's release (PAPER.md §1) is `consolidated.NN.pth` (one file per model-parallel rank) plus `params.json`.
Column-parallel weights (`wq wk wv w1 w3 output`) are split along dim 0, row-parallel ones (`wo w2`) and
`tok_embeddings` along dim 1, norms are replicated. Used by `convert_meta` and `export_meta`.
"""

from __future__ import annotations

import re

import torch

from ..configuration_llama_paper import swiglu_hidden_size

# Meta key (inside layer N) -> (our key inside `model.layers.N.`, split dim across shards, or None if replicated)
LAYER_KEYS: dict[str, tuple[str, int | None]] = {
    "attention.wq.weight": ("self_attn.q_proj.weight", 0),
    "attention.wk.weight": ("self_attn.k_proj.weight", 0),
    "attention.wv.weight": ("self_attn.v_proj.weight", 0),
    "attention.wo.weight": ("self_attn.o_proj.weight", 1),
    "feed_forward.w1.weight": ("mlp.gate_proj.weight", 0),
    "feed_forward.w2.weight": ("mlp.down_proj.weight", 1),
    "feed_forward.w3.weight": ("mlp.up_proj.weight", 0),
    "attention_norm.weight": ("input_layernorm.weight", None),
    "ffn_norm.weight": ("post_attention_layernorm.weight", None),
}
GLOBAL_KEYS: dict[str, tuple[str, int | None]] = {
    "tok_embeddings.weight": ("model.embed_tokens.weight", 1),
    "norm.weight": ("model.norm.weight", None),
    "output.weight": ("lm_head.weight", 0),
}
IGNORED_KEYS = {"rope.freqs"}  # a buffer of Meta's training code, recomputed by the model
LAYER_KEY = re.compile(r"^layers\.(\d+)\.(.+)$")
SHARD_NAME = re.compile(r"^consolidated\.(\d+)\.pth$")


def shard_name(rank: int) -> str:
    """Meta's file name for model-parallel rank `rank`."""
    return f"consolidated.{rank:02d}.pth"


def parse_key(key: str) -> tuple[int | None, str, int | None]:
    """Meta key -> (layer index or None, our key, split dim); KeyError for keys Meta's layout does not have."""
    if key in GLOBAL_KEYS:
        ours, dim = GLOBAL_KEYS[key]
        return None, ours, dim
    match = LAYER_KEY.match(key)
    if match and match.group(2) in LAYER_KEYS:
        ours, dim = LAYER_KEYS[match.group(2)]
        layer = int(match.group(1))
        return layer, f"model.layers.{layer}.{ours}", dim
    raise KeyError(key)


def meta_key(layer: int | None, name: str) -> str:
    """The Meta key of a global (`layer=None`) or per-layer tensor name."""
    return name if layer is None else f"layers.{layer}.{name}"


def permute_rotary(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Meta rows -> our rows for `wq`/`wk`: within each head, interleaved pairs (x0,x1),(x2,x3).. -> halves.

    Meta's RoPE treats channels (2i, 2i+1) as one complex number; our rotate-half layout pairs channel i with
    i + head_dim/2. Reordering the output rows of wq/wk makes both compute the same attention scores.
    """
    rows, cols = weight.shape
    return weight.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def unpermute_rotary(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of `permute_rotary`: our rows -> Meta's interleaved rows."""
    rows, cols = weight.shape
    return weight.view(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def rope_freqs(head_dim: int, theta: float, dtype: torch.dtype) -> torch.Tensor:
    """Meta's `rope.freqs` buffer: 1 / theta^(2i/head_dim), i < head_dim/2."""
    return (1.0 / theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim)).to(dtype)


def ffn_params(hidden_size: int, intermediate_size: int, multiple_of: int = 256) -> dict:
    """`multiple_of` (and `ffn_dim_multiplier` if needed) that make Meta's formula give `intermediate_size`."""
    if swiglu_hidden_size(hidden_size, multiple_of) == intermediate_size:
        return {"multiple_of": multiple_of}
    base = int(2 * (4 * hidden_size) / 3)
    if intermediate_size >= base:  # rounding base up to a multiple of the width itself gives the width
        return {"multiple_of": intermediate_size}
    # Narrower than 8d/3: a multiplier slightly above width/base so that int(multiplier * base) == width.
    return {"multiple_of": 1, "ffn_dim_multiplier": (intermediate_size + 0.5) / base}
