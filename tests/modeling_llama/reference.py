"""Build transformers' own LlamaForCausalLM with the same weights as ours: the independent reference."""

from __future__ import annotations

from transformers import LlamaConfig, LlamaForCausalLM

from modeling_llama import LlamaPaperConfig


def reference_config(c: LlamaPaperConfig) -> LlamaConfig:
    """The transformers LlamaConfig describing the same architecture as `c`."""
    return LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads, max_position_embeddings=c.max_position_embeddings,
        rms_norm_eps=c.rms_norm_eps, rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
        tie_word_embeddings=c.tie_word_embeddings, bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id,
        pad_token_id=c.pad_token_id,
    )


def reference_model(ours) -> LlamaForCausalLM:
    """transformers' LlamaForCausalLM loaded (strictly) with `ours`' state dict."""
    ref = LlamaForCausalLM(reference_config(ours.config))
    ref.load_state_dict(ours.state_dict(), strict=True)
    ref.set_attn_implementation(ours.config._attn_implementation)
    return ref.eval()
