"""The oneDNN-packed output projection used by eager sampled decoding (modeling_llama/packed_projection.py)."""

import pytest
import torch

from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM
from modeling_llama import decoding
from modeling_llama.decoding import Sampling, generate_tokens
from modeling_llama.packed_projection import PackedProjection, applies_to, packed_projection_for


def test_applies_to_float32_cpu_weights_only():
    assert applies_to(torch.zeros(4, 2)) and not applies_to(torch.zeros(4, 2, dtype=torch.float64))


@pytest.mark.parametrize("rows", [1, 5, 16])
def test_logits_equal_f_linear_within_float_rounding(rows):
    torch.manual_seed(0)
    weight, hidden = torch.randn(1000, 64) * 0.05, torch.randn(rows, 64)
    projection = PackedProjection(weight, rows)
    expected = torch.nn.functional.linear(hidden, weight)
    assert torch.allclose(projection(hidden), expected, atol=1e-5, rtol=0)
    # fewer live rows than the batch it was packed for (rows leave the batch as they stop)
    assert torch.allclose(projection(hidden[:1]), expected[:1], atol=1e-5, rtol=0)


def test_rebuilt_when_the_weight_changes_in_place():
    model = LlamaPaperForCausalLM(LlamaPaperConfig.from_preset("tiny", vocab_size=300)).eval()
    cache = {}
    first = packed_projection_for(model, 4, cache)
    assert packed_projection_for(model, 4, cache) is first
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(2)
    second = packed_projection_for(model, 4, cache)
    assert second is not first
    hidden = torch.randn(2, model.config.hidden_size)
    assert torch.allclose(second(hidden), model.get_output_embeddings()(hidden), atol=1e-5, rtol=0)
    assert packed_projection_for(model.to(torch.float64), 4, {}) is None  # not float32: F.linear


def test_eager_sampled_decoding_goes_through_it_and_draws_what_the_full_logits_draw(monkeypatch):
    torch.manual_seed(1)
    model = LlamaPaperForCausalLM(LlamaPaperConfig.from_preset("tiny", vocab_size=300)).eval()
    prompts = [[1, 5, 9, 14], [1, 7]]
    sampling = Sampling(temperature=0.9, seed=5)
    calls = []
    real = PackedProjection.__call__
    monkeypatch.setattr(PackedProjection, "__call__", lambda self, h: calls.append(len(h)) or real(self, h))
    packed = generate_tokens(model, prompts, 12, sampling, num_samples=3, compile=False)
    assert calls and calls[0] == 6  # every step after the prefill: 2 prompts x 3 samples
    monkeypatch.setattr(decoding, "packed_projection_for", lambda *args: None)  # the model's own F.linear
    assert generate_tokens(model, prompts, 12, sampling, num_samples=3, compile=False) == packed
