"""The config: the paper's defaults, presets, parameter counts and validation."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig

from modeling_llama import PAPER_PARAMETERS, LlamaPaperConfig, LlamaPaperForCausalLM
from modeling_llama.configuration_llama_paper import swiglu_hidden_size
from modeling_llama.flops import count_parameters, flops_per_token


def test_defaults_are_the_papers_7b():
    c = LlamaPaperConfig()
    assert (c.hidden_size, c.num_attention_heads, c.num_hidden_layers, c.intermediate_size) == (4096, 32, 32, 11008)
    assert (c.vocab_size, c.max_position_embeddings, c.rms_norm_eps, c.rope_theta) == (32000, 2048, 1e-6, 10000.0)
    assert c.tie_word_embeddings is False and (c.bos_token_id, c.eos_token_id, c.pad_token_id) == (1, 2, None)


@pytest.mark.parametrize("dim,expected", [(4096, 11008), (5120, 13824), (6656, 17920), (8192, 22016)])
def test_swiglu_width_rule_matches_the_paper(dim, expected):
    assert swiglu_hidden_size(dim) == expected
    # The rule itself: 2/3 * 4d rounded up to a multiple of 256.
    assert expected % 256 == 0 and 0 <= expected - 8 * dim / 3 < 256


def test_field_names_match_transformers_llama_config():
    ours = LlamaPaperConfig.from_preset("tiny").to_dict()
    theirs = LlamaConfig().to_dict()
    shared = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings",
              "initializer_range", "use_cache", "bos_token_id", "eos_token_id", "pad_token_id"]
    for name in shared:
        assert name in ours and name in theirs, name
    assert "rope_theta" in ours
    assert LlamaPaperConfig.model_type == "llama_paper"


@pytest.mark.parametrize("name", ["7B", "13B", "33B", "65B"])
def test_preset_parameter_counts_equal_the_papers_without_allocating(name):
    config = LlamaPaperConfig.from_preset(name)
    with torch.device("meta"):
        model = LlamaPaperForCausalLM(config)
    n = sum(p.numel() for p in model.parameters())
    assert n == count_parameters(config)
    assert abs(n - PAPER_PARAMETERS[name]) < 0.1e9, (name, n)


def test_flops_per_token_is_six_n_plus_attention():
    c = LlamaPaperConfig.from_preset("7B")
    n_matmul = count_parameters(c) - c.vocab_size * c.hidden_size - (2 * c.num_hidden_layers + 1) * c.hidden_size
    attention = 12 * c.num_hidden_layers * c.hidden_size * 2048
    assert flops_per_token(c, 2048) == pytest.approx(6 * n_matmul + attention, rel=1e-4)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(hidden_size=100, num_attention_heads=3), "divisible by num_attention_heads"),
        (dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=3), "divisible by num_key_value_heads"),
        (dict(hidden_size=36, num_attention_heads=4), "odd"),
        (dict(num_hidden_layers=0), "positive"),
        (dict(vocab_size=-5), "positive"),
        (dict(rms_norm_eps=0.0), "positive"),
    ],
)
def test_inconsistent_values_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LlamaPaperConfig(**kwargs)


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="7B"):
        LlamaPaperConfig.from_preset("8B")


def test_save_and_load_round_trip(tmp_path):
    c = LlamaPaperConfig.from_preset("tiny", num_key_value_heads=2, rope_theta=5e5, custom_field=3)
    c.save_pretrained(tmp_path)
    back = LlamaPaperConfig.from_pretrained(tmp_path)
    assert back.to_dict() == c.to_dict() and back.custom_field == 3
