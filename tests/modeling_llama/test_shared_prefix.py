"""A prompt's keys/values shared by its samples in decode-step attention (modeling_llama/shared_prefix.py)."""

import pytest
import torch
import torch.nn.functional as F

from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM, decoding
from modeling_llama.decoding import Sampling, generate_tokens
from modeling_llama.shared_prefix import SharedPrefixCache, shared_prefix_attention

from .reference import reference_model


class Layer(torch.nn.Module):
    layer_idx = 0


@pytest.mark.parametrize("kv", [4, 2], ids=["mha", "gqa"])
def test_equals_sdpa_over_each_rows_prompt_and_own_columns(kv):
    """Rows of three prompts (3, 1 and 2 rows), prompts left-padded to 6 columns, 4 own columns each: the result is
    SDPA over [that row's prompt columns, its own columns] with the padding masked."""
    torch.manual_seed(0)
    heads, hd, width, own = 4, 8, 6, 4
    row_prompt = [0, 0, 0, 1, 2, 2]
    prefix_k, prefix_v = torch.randn(3, kv, width, hd), torch.randn(3, kv, width, hd)
    valid = torch.ones(3, width, dtype=torch.bool)
    valid[1, :2] = False  # prompt 1 is 4 tokens long
    cache = SharedPrefixCache.from_prefill([prefix_k], [prefix_v], valid, row_prompt, own)
    own_k, own_v = torch.randn(6, kv, own, hd), torch.randn(6, kv, own, hd)
    for step in range(own):  # the decode steps write their own columns one by one
        cache.step = step
        k, v = cache.update(own_k[:, :, step:step + 1], own_v[:, :, step:step + 1], 0)
    q = torch.randn(6, heads, 1, hd)
    got, weights = shared_prefix_attention(Layer(), q, k, v, None, scaling=hd**-0.5, shared_prefix=cache)
    rows = torch.tensor(row_prompt)
    full_k = torch.cat([prefix_k[rows], own_k], dim=2).repeat_interleave(heads // kv, dim=1)
    full_v = torch.cat([prefix_v[rows], own_v], dim=2).repeat_interleave(heads // kv, dim=1)
    mask = torch.cat([valid[rows], torch.ones(6, own, dtype=torch.bool)], dim=1)[:, None, None]
    expected = F.scaled_dot_product_attention(q, full_k, full_v, attn_mask=mask).transpose(1, 2)
    assert weights is None and got.shape == (6, 1, heads, hd)
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)
    kept = cache.select_rows([1, 3, 5])  # rows that keep decoding: one per prompt
    assert kept.segments == [[0, 0, 1], [1, 1, 2], [2, 2, 3]] and kept.step == own - 1
    k3, v3 = k[[1, 3, 5]], v[[1, 3, 5]]
    again, _ = shared_prefix_attention(Layer(), q[[1, 3, 5]], k3, v3, None, scaling=hd**-0.5, shared_prefix=kept)
    assert torch.allclose(again, expected[[1, 3, 5]], atol=1e-6, rtol=0)


def test_refuses_what_it_does_not_serve():
    with pytest.raises(ValueError, match="grouped by prompt"):
        SharedPrefixCache.from_prefill([torch.zeros(2, 1, 3, 4)], [torch.zeros(2, 1, 3, 4)],
                                       torch.ones(2, 3, dtype=torch.bool), [1, 0], 2)
    with pytest.raises(ValueError, match="one-token decode steps"):
        shared_prefix_attention(Layer(), torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2, 4),
                                None, scaling=1.0)


@pytest.mark.parametrize("reference", [False, True], ids=["ours", "transformers-llama"])
def test_sampled_decoding_draws_what_copied_prompt_rows_draw(reference, monkeypatch):
    """Uneven samples per prompt, rows finishing early (stop function): the shared-prompt path draws the same tokens as
    the path that copies each prompt's cache row per sample; for our model and transformers' LlamaForCausalLM."""
    torch.manual_seed(0)
    config = LlamaPaperConfig.from_preset("tiny", vocab_size=512, num_key_value_heads=2, initializer_range=0.2)
    model = LlamaPaperForCausalLM(config).eval()
    if reference:
        model = reference_model(model)
    prompts = [[5, 9, 14, 3, 77, 21, 8], [1, 7], [40, 41, 42, 43]]
    sampling = Sampling(temperature=0.9, seed=11)
    samples = [[0, 1, 2], [4], [1, 3]]
    stop = lambda toks: len(toks) >= 3 and toks[-1] % 5 == 0  # noqa: E731  (rows stop at different steps)
    calls = []
    real = decoding._shared_step
    monkeypatch.setattr(decoding, "_shared_step", lambda *a: calls.append(len(a[1])) or real(*a))
    shared = generate_tokens(model, prompts, 12, sampling, samples, stop=stop, compile=False)
    assert calls and calls[0] == 6 and min(calls) < 6  # six rows at first, fewer once some stopped
    monkeypatch.setattr(decoding, "SHARE_PROMPT_CACHE", False)
    copied = generate_tokens(model, prompts, 12, sampling, samples, stop=stop, compile=False)
    assert shared == copied and len({len(s) for p in shared for s in p}) > 1
    assert model.config._attn_implementation == "sdpa"  # switched back after the loop
