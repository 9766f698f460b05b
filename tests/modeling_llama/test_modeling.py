"""The model equals transformers' own Llama on the same weights, and behaves as a Transformers model should."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, StaticCache

from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM, LlamaPaperForSequenceClassification

from .reference import reference_model

VOCAB = 512


def tiny(seed: int = 0, **overrides) -> LlamaPaperForCausalLM:
    torch.manual_seed(seed)
    config = LlamaPaperConfig.from_preset("tiny", vocab_size=VOCAB, **overrides)
    return LlamaPaperForCausalLM(config).eval()


def left_padded_batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Three rows of lengths 11, 7 and 3, left-padded with id 0 to length 11."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    for row, pad in enumerate((0, 4, 8)):
        ids[row, :pad], mask[row, :pad] = 0, 0
    return ids, mask


@pytest.mark.parametrize("kv_heads", [4, 2, 1], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_logits_equal_transformers_llama_on_left_padded_batch(kv_heads, attn):
    ours = tiny(num_key_value_heads=kv_heads)
    ours.set_attn_implementation(attn)
    ref = reference_model(ours)
    ids, mask = left_padded_batch()
    with torch.no_grad():
        a, b = ours(ids, attention_mask=mask).logits, ref(ids, attention_mask=mask).logits
    assert (a - b)[mask.bool()].abs().max() <= 1e-5
    # Each row alone equals its row in the padded batch.
    for row in range(ids.shape[0]):
        keep = mask[row].bool()
        with torch.no_grad():
            alone = ours(ids[row, keep][None]).logits[0]
        assert (alone - a[row, keep]).abs().max() <= 1e-5


@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
def test_greedy_tokens_equal_transformers_llama(kv_heads):
    ours = tiny(num_key_value_heads=kv_heads)
    ref = reference_model(ours)
    ids, mask = left_padded_batch()
    kw = dict(attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(ours.generate(ids, **kw), ref.generate(ids, **kw))


def test_cached_and_uncached_generation_agree_greedy_and_beam():
    ours = tiny(num_key_value_heads=2)
    ids, mask = left_padded_batch()
    for extra in (dict(do_sample=False), dict(do_sample=False, num_beams=3)):
        kw = dict(attention_mask=mask, max_new_tokens=10, pad_token_id=0, **extra)
        assert torch.equal(ours.generate(ids, use_cache=True, **kw), ours.generate(ids, use_cache=False, **kw))


def test_static_and_dynamic_cache_agree():
    ours = tiny(num_key_value_heads=2)
    ids, mask = left_padded_batch()
    kw = dict(attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0)
    dynamic = ours.generate(ids, cache_implementation="dynamic", **kw)
    static = ours.generate(ids, cache_implementation="static", **kw)
    assert torch.equal(dynamic, static)
    # And an explicit StaticCache in a manual two-step decode equals the full forward pass.
    cache = StaticCache(config=ours.config, max_cache_len=32)
    x = ids[:1]
    with torch.no_grad():
        first = ours(x[:, :6], cache=cache, use_cache=True).logits
        second = ours(x[:, 6:], cache=cache, use_cache=True).logits
        full = ours(x).logits
    assert torch.allclose(torch.cat([first, second], 1), full, atol=1e-5)


def test_incremental_decoding_with_dynamic_cache_equals_full_forward():
    ours = tiny()
    x = torch.randint(3, VOCAB, (2, 9))
    with torch.no_grad():
        full = ours(x).logits
        cache = DynamicCache(config=ours.config)
        steps = [ours(x[:, i : i + 1], cache=cache, use_cache=True).logits for i in range(x.shape[1])]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)
    assert cache.get_seq_length() == x.shape[1]


def test_sampling_is_reproducible_with_a_seed():
    ours = tiny()
    x = torch.randint(3, VOCAB, (1, 5))
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(ours.generate(x, do_sample=True, top_p=0.9, temperature=1.0, max_new_tokens=8, pad_token_id=0))
    assert torch.equal(*runs)


def test_logits_to_keep_returns_the_last_positions_only():
    ours = tiny()
    x = torch.randint(3, VOCAB, (2, 8))
    with torch.no_grad():
        full = ours(x).logits
        last = ours(x, logits_to_keep=1).logits
        three = ours(x, logits_to_keep=3).logits
    assert last.shape == (2, 1, VOCAB) and torch.allclose(last, full[:, -1:], atol=1e-6)
    assert torch.allclose(three, full[:, -3:], atol=1e-6)


def test_hidden_states_and_tuple_output():
    ours = tiny()
    x = torch.randint(3, VOCAB, (1, 6))
    out = ours(x, output_hidden_states=True)
    assert len(out.hidden_states) == ours.config.num_hidden_layers + 1
    assert torch.equal(out.hidden_states[0], ours.model.embed_tokens(x))
    as_tuple = ours(x, return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], out.logits)


def test_loss_is_shifted_cross_entropy_and_honours_num_items_in_batch():
    ours = tiny()
    x = torch.randint(3, VOCAB, (2, 10))
    labels = x.clone()
    labels[0, :3] = -100
    out = ours(x, labels=labels)
    expected = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].reshape(-1, VOCAB).float(), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    assert torch.allclose(out.loss, expected, atol=1e-6)
    n = int((labels[:, 1:] != -100).sum())
    summed = ours(x, labels=labels, num_items_in_batch=torch.tensor(2 * n)).loss
    assert torch.allclose(summed, expected / 2, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_half_precision_with_fully_masked_rows_has_no_nan(dtype, attn):
    ours = tiny().to(dtype)
    ours.set_attn_implementation(attn)
    ids, mask = left_padded_batch()  # row 2 has 8 padding positions whose attention rows are fully masked
    with torch.no_grad():
        logits = ours(ids, attention_mask=mask).logits
    assert torch.isfinite(logits).all()
    ref = reference_model(tiny()).to(dtype)
    with torch.no_grad():
        ref_logits = ref(ids, attention_mask=mask).logits
    assert (logits.float() - ref_logits.float())[mask.bool()].abs().max() <= 1e-2


def test_rotary_angles_stay_float32_under_bf16():
    ours = tiny().to(torch.bfloat16)  # also casts the inv_freq buffer to bf16
    pos = torch.arange(2000)[None]
    cos, _ = ours.model.rotary_emb(torch.zeros(1, dtype=torch.bfloat16), pos)
    exact = torch.cos(pos[0, :, None].double() * (1.0 / 10000 ** (torch.arange(0, 16, 2).double() / 16)))
    # Angles computed in bf16 would be off by whole radians at position 2000; float32 angles are off by < 1e-2 after
    # rounding the result to bf16.
    assert (cos[0, :, :8].double() - exact).abs().max() < 1e-2


def test_casts_keep_the_rotary_frequencies_float32_so_forward_never_rebuilds_them(monkeypatch, tmp_path):
    import modeling_llama.rotary as rotary

    ours = tiny().to(torch.bfloat16)
    inv_freq = ours.model.rotary_emb.inv_freq
    assert inv_freq.dtype == torch.float32 and torch.equal(inv_freq, rotary.rope_inv_freq(16, 10000.0))
    ours.save_pretrained(tmp_path)
    loaded = LlamaPaperForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert loaded.model.rotary_emb.inv_freq.dtype == torch.float32
    # Rebuilding inv_freq inside forward is what torch.compile fused into every layer's rotary kernel.
    monkeypatch.setattr(rotary, "rope_inv_freq", lambda *a, **k: pytest.fail("forward rebuilt inv_freq"))
    for model in (ours, loaded):
        with torch.no_grad():
            model(torch.randint(3, VOCAB, (1, 8)))


def test_unpadded_sdpa_forward_uses_the_kernels_causal_mask_even_under_torch_compile(monkeypatch):
    import transformers.masking_utils
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    seen = []
    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]

    def probe(module, q, k, v, mask, **kwargs):
        seen.append(mask)
        return sdpa(module, q, k, v, mask, **kwargs)

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, "sdpa", probe)
    ours = tiny()
    x = torch.randint(3, VOCAB, (2, 12))
    with torch.no_grad():
        eager_logits = ours(x, use_cache=False).logits
        # What torch.compile does on torch < 2.14 (dynamo turns is_exporting() into True): create_causal_mask then
        # builds a (B, 1, T, T) mask, which keeps SDPA off its causal kernels; the model must not ask for one.
        monkeypatch.setattr(transformers.masking_utils, "is_torchdynamo_exporting", lambda: True)
        seen.clear()
        logits = ours(x, use_cache=False).logits
        assert seen and all(mask is None for mask in seen)
        assert torch.equal(logits, eager_logits)
        # A padding mask, packed-document positions or a filled cache still get their mask, causal included.
        seen.clear()
        ours(x, attention_mask=torch.ones_like(x), use_cache=False)
        assert seen[0] is not None and seen[0].shape == (2, 1, 12, 12) and not seen[0][0, 0, 0, 1]
        seen.clear()
        positions = torch.cat([torch.arange(6), torch.arange(6)])[None].expand(2, -1)
        packed = ours(x, position_ids=positions, use_cache=False).logits
        assert seen[0] is not None and not seen[0][0, 0, 6, 5]  # the second document does not see the first
        assert torch.allclose(packed[:, 6:], ours(x[:, 6:], use_cache=False).logits, atol=1e-5)


def test_activation_checkpointing_gives_the_same_gradients():
    ours = tiny().train()
    x = torch.randint(3, VOCAB, (2, 12))
    ours(x, labels=x).loss.backward()
    plain = {n: p.grad.clone() for n, p in ours.named_parameters()}
    ours.zero_grad()
    ours.activation_checkpointing_enable()
    assert ours.model.layers[0].gradient_checkpointing
    ours(x, labels=x).loss.backward()
    for name, p in ours.named_parameters():
        assert torch.allclose(p.grad, plain[name], atol=1e-6), name


def test_tied_embeddings_share_one_tensor():
    ours = tiny(tie_word_embeddings=True)
    assert ours.lm_head.weight.data_ptr() == ours.model.embed_tokens.weight.data_ptr()
    untied = tiny()  # the paper's default: separate input embedding and output projection
    assert untied.lm_head.weight.data_ptr() != untied.model.embed_tokens.weight.data_ptr()
    assert not torch.equal(untied.lm_head.weight, untied.model.embed_tokens.weight)


def test_initialisation_follows_initializer_range():
    ours = tiny(initializer_range=0.05)
    w = ours.model.layers[0].mlp.gate_proj.weight
    assert abs(w.std().item() - 0.05) < 0.005 and abs(w.mean().item()) < 0.005
    assert torch.equal(ours.model.norm.weight, torch.ones_like(ours.model.norm.weight))


def test_tensor_parallel_plan_names_real_modules():
    ours = tiny()
    names = {n for n, _ in ours.model.named_modules()}
    for pattern, style in ours.config.base_model_tp_plan.items():
        assert pattern.replace("*", "0") in names, pattern
        assert style in ("colwise", "rowwise")
    assert set(ours.config.base_model_pp_plan) <= {n.split(".")[0] for n in names}


def test_sequence_classification_scores_last_real_token():
    torch.manual_seed(0)
    config = LlamaPaperConfig.from_preset("tiny", vocab_size=VOCAB, num_labels=3, pad_token_id=0)
    model = LlamaPaperForSequenceClassification(config).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0], [5, 6, 7, 8, 9]])
    out = model(ids, labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3) and out.loss.ndim == 0
    alone = model(ids[:1, :3]).logits
    assert torch.allclose(out.logits[0], alone[0], atol=1e-5)


def test_bad_inputs_raise_clear_errors():
    ours = tiny()
    with pytest.raises(ValueError, match="batch"):
        ours(torch.randint(3, VOCAB, (6,)))
    with pytest.raises(ValueError, match="exactly one"):
        ours()
