"""Parameter counts, FLOPs per token and memory, from a config alone (no weights allocated)."""

from __future__ import annotations

from .configuration_llama_paper import LlamaPaperConfig


def count_parameters(config: LlamaPaperConfig, include_embeddings: bool = True) -> int:
    """Exact number of parameters of `LlamaPaperForCausalLM(config)`."""
    d, f, L, V = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    kv = config.num_key_value_heads * config.head_dim
    attention = d * d * 2 + d * kv * 2  # wq, wo full width; wk, wv at kv width (GQA)
    mlp = 3 * d * f  # SwiGLU has three matrices
    per_layer = attention + mlp + 2 * d  # + the two RMSNorm gains
    embeddings = V * d * (1 if config.tie_word_embeddings else 2)
    return L * per_layer + d + (embeddings if include_embeddings else 0)


def flops_per_token(config: LlamaPaperConfig, seq_len: int | None = None, training: bool = True) -> float:
    """Model FLOPs per token: 6N (2N forward) for the matmuls plus causal attention (PaLM appendix B)."""
    seq_len = seq_len or config.max_position_embeddings
    n = count_parameters(config, include_embeddings=False) + config.vocab_size * config.hidden_size  # output head
    # QK^T and AV: two matmuls of 2·d FLOPs per (query, key) pair and layer, over the full T x T square as PaLM
    # counts it (training total 6N + 12·L·d·T; PaLM appendix B).
    attention = 2 * 2 * config.num_hidden_layers * config.hidden_size * seq_len
    forward = 2 * n + attention
    return 3 * forward if training else forward


def memory_bytes(config: LlamaPaperConfig) -> dict[str, int]:
    """Bytes taken by the weights in each dtype."""
    n = count_parameters(config)
    return {"float32": 4 * n, "bfloat16": 2 * n, "float16": 2 * n}
