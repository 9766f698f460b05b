"""Fast decoding (modeling_llama/decoding.py) against transformers' generate() and against decoding one sample alone."""

from __future__ import annotations

import pytest
import torch

from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM, decoding
from modeling_llama.decoding import GREEDY, Sampling, generate_tokens, next_tokens, sample_keys

VOCAB = 512


def tiny(kv_heads: int, seed: int = 0) -> LlamaPaperForCausalLM:
    torch.manual_seed(seed)
    config = LlamaPaperConfig.from_preset("tiny", vocab_size=VOCAB, num_key_value_heads=kv_heads,
                                          initializer_range=0.2)  # peaky logits: no near-ties in the argmax
    return LlamaPaperForCausalLM(config).eval()


def prompts(lengths: tuple[int, ...], seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in lengths]


def reference_greedy(model, batch: list[list[int]], new: int) -> list[list[int]]:
    """transformers' generate() on the left-padded batch (pad id 0, attention mask), no EOS stop."""
    width = max(map(len, batch))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in batch])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
    out = model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                         pad_token_id=0, eos_token_id=None)
    return out[:, width:].tolist()


@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
@pytest.mark.parametrize("lengths", [(9,), (11, 7, 3)], ids=["batch1", "left-padded"])
def test_static_cache_greedy_equals_generate(kv_heads, lengths):
    model = tiny(kv_heads)
    batch = prompts(lengths)
    got = generate_tokens(model, batch, 12, GREEDY, compile=False)
    assert [g[0] for g in got] == reference_greedy(model, batch, 12)


@pytest.mark.parametrize("kv_heads,backend", [(4, "aot_eager"), (2, "inductor")], ids=["mha", "gqa-inductor"])
def test_compiled_greedy_equals_generate(kv_heads, backend, monkeypatch):
    """The compiled decode step gives generate()'s tokens on a left-padded batch (and batch 1: a recompile).

    Inductor (what `--compile` runs) on one config, since a cold inductor build takes tens of seconds on 2 cores;
    aot_eager traces the same graph (cache mutation, 4D mask, argmax) without inductor's code generation, on the
    other config. benchmarks/bench_generate.py checks the inductor batch-1 tokens on the small preset too.
    """
    monkeypatch.setattr(decoding, "COMPILE_BACKEND", backend)
    model = tiny(kv_heads)
    for lengths in ((11, 7, 3), (9,)):  # batch 1: inductor's decompose_mm_pass rewrites its one-row products
        batch = prompts(lengths)
        got = generate_tokens(model, batch, 6, GREEDY, compile=True)
        assert [g[0] for g in got] == reference_greedy(model, batch, 6)


def reference_sample(model, prompt: list[int], sampling: Sampling, index: int, new: int) -> list[int]:
    """Sample `index` of `prompt` decoded alone, without any cache: a full forward over the sequence every step."""
    keys = sample_keys(sampling.seed, prompt, [index])
    seq = list(prompt)
    with torch.no_grad():
        for step in range(new):
            logits = model(torch.tensor([seq])).logits[:, -1].float()
            seq.append(int(next_tokens(logits, sampling, keys, torch.tensor(step))[0]))
    return seq[len(prompt):]


@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
def test_shared_prompt_samples_equal_each_sample_decoded_alone(kv_heads):
    model = tiny(kv_heads)
    batch = prompts((10, 4))
    sampling = Sampling(temperature=0.8, top_p=0.95, seed=7)
    got = generate_tokens(model, batch, 10, sampling, num_samples=4, compile=False)
    for p, prompt in enumerate(batch):
        assert len(set(map(tuple, got[p]))) > 1  # the samples differ from one another
        for i in range(4):
            assert got[p][i] == reference_sample(model, prompt, sampling, i, 10), (p, i)
    # Drawing only sample 2 of the second prompt (a resumed run) gives that same sample.
    assert generate_tokens(model, batch[1:], 10, sampling, num_samples=[2])[0][0] == got[1][2]
    # Another seed draws other samples.
    other = generate_tokens(model, batch, 10, Sampling(temperature=0.8, top_p=0.95, seed=8), num_samples=4)
    assert other != got


def test_rows_stop_at_eos_and_stop_function_independently():
    model = tiny(4)
    batch = prompts((6, 6))
    full = generate_tokens(model, batch, 10)
    eos = full[0][0][3]  # row 0's 4th token: row 0 must stop there, row 1 only if it emits it too
    got = generate_tokens(model, batch, 10, eos_token_ids=(eos,))
    assert got[0][0] == full[0][0][:full[0][0].index(eos) + 1]
    cut = full[1][0].index(eos) + 1 if eos in full[1][0] else 10
    assert got[1][0] == full[1][0][:cut]
    stopped = generate_tokens(model, batch, 10, stop=lambda toks: len(toks) >= 5)
    assert [s[0] for s in stopped] == [f[0][:5] for f in full]


def test_sampling_draws_from_the_softmax_within_top_p():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0]])
    sampling = Sampling(temperature=0.7, seed=3)
    keys = sample_keys(3, [1, 2, 3], list(range(20000)))
    draws = next_tokens(logits.expand(len(keys), -1), sampling, keys, torch.tensor(0))
    freq = torch.bincount(draws, minlength=5).double() / len(keys)
    assert torch.allclose(freq, (logits[0] / 0.7).double().softmax(-1), atol=0.01)
    nucleus = next_tokens(logits.expand(len(keys), -1), Sampling(temperature=0.7, top_p=0.8, seed=3), keys,
                          torch.tensor(0))
    assert set(nucleus.tolist()) == {0, 1}  # p = 0.73, 0.17, 0.09, ...: the smallest set holding 0.8 of the mass


def test_transformers_llama_decodes_through_the_same_path():
    """transformers' own LlamaForCausalLM (same weights) is driven too, and gives its generate() tokens."""
    from modeling_llama.decoding import supports_fast_decoding

    from .reference import reference_model

    ref = reference_model(tiny(2))
    batch = prompts((11, 7, 3))
    assert supports_fast_decoding(ref)
    assert [g[0] for g in generate_tokens(ref, batch, 8)] == reference_greedy(ref, batch, 8)


def briefly_trained(kv_heads: int = 2) -> LlamaPaperForCausalLM:
    """A tiny model with default (near-tie-prone) init, trained 12 steps on counting sequences: realistic logits."""
    torch.manual_seed(3)
    config = LlamaPaperConfig.from_preset("tiny", vocab_size=VOCAB, num_key_value_heads=kv_heads)
    model = LlamaPaperForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(12):
        start, stride = torch.randint(3, VOCAB, (8, 1)), torch.randint(1, 4, (8, 1))
        ids = 3 + (start + stride * torch.arange(24)) % (VOCAB - 3)
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def test_certified_head_greedy_equals_generate_on_trained_and_random_models(monkeypatch):
    """Greedy tokens through the fp16 head + exact recompute (greedy_head.py) are generate()'s, batch 1 and padded,
    eager; compiled (aot_eager) on the trained model's padded batch with rows stopping early
    (test_compiled_greedy_equals_generate covers the other compiled shapes, inductor included, through the head)."""
    from modeling_llama import greedy_head

    monkeypatch.setattr(decoding, "COMPILE_BACKEND", "aot_eager")
    calls = []
    real = greedy_head.CertifiedGreedyHead.argmax
    monkeypatch.setattr(greedy_head.CertifiedGreedyHead, "argmax", lambda self, h: calls.append(1) or real(self, h))
    torch.manual_seed(4)
    random_default_init = LlamaPaperForCausalLM(LlamaPaperConfig.from_preset("tiny", vocab_size=VOCAB)).eval()
    trained = briefly_trained()
    runs = [(trained, (9,)), (trained, (11, 7, 3)), (random_default_init, (9,)), (random_default_init, (11, 7, 3))]
    for model, lengths in runs:
        batch = prompts(lengths)
        got = generate_tokens(model, batch, 10, GREEDY, compile=False)
        assert [g[0] for g in got] == reference_greedy(model, batch, 10)
    assert len(calls) == len(runs) * 10  # every token of every run came from the certified head
    # Compiled, on a padded batch whose first row finishes early: the batch shrinks 2 -> 1 (each new shape runs
    # once with dynamo's guards, the steps after it without: decoding.skipping_guards).
    trained_batch = prompts((11, 5))
    full = reference_greedy(trained, trained_batch, 10)
    stopped = generate_tokens(trained, trained_batch, 10, GREEDY, compile=True,
                              stop=lambda toks: toks == full[0][:4])
    assert [s[0] for s in stopped] == [full[0][:4], full[1]]
    calls.clear()
    # And the full-logits path (greedy_head=False) agrees, without touching the head.
    assert generate_tokens(model, batch, 10, GREEDY, greedy_head=False) == got
    assert not calls


def test_per_prompt_sample_lists_equal_the_same_samples_drawn_by_count():
    # A batch cut by rows holds the last samples of one prompt beside the first of the next.
    model = tiny(2)
    batch = prompts((7, 4))
    sampling = Sampling(temperature=0.9, seed=3)
    full = generate_tokens(model, batch, 8, sampling, num_samples=3)
    got = generate_tokens(model, batch, 8, sampling, num_samples=[[2], [0, 1]])
    assert got == [[full[0][2]], full[1][:2]]
    with pytest.raises(ValueError, match="one non-empty list"):
        generate_tokens(model, batch, 8, sampling, num_samples=[[0]])


@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
def test_prefill_each_fills_the_cache_as_the_padded_batch_does(kv_heads):
    """Prompts run one by one (CPU prefill) leave the same keys/values and last hidden states as one left-padded
    batch through the masked path, within float rounding."""
    from modeling_llama.decoding import StaticKVCache, forward_hidden, left_pad, prefill_each

    model = tiny(kv_heads)
    batch = prompts((11, 7, 3))
    width, length = 11, 16
    ids, valid, positions = left_pad(batch, length, 0, torch.device("cpu"))
    padded, each = StaticKVCache.for_model(model, 3, length), StaticKVCache.for_model(model, 3, length)
    with torch.no_grad():
        expected = forward_hidden(model, ids, positions, torch.arange(width), valid[:, :width], padded)
        got = prefill_each(model, batch, each, width)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    for a, b in zip(padded.keys + padded.values, each.keys + each.values):
        real = valid[:, None, :width, None].expand_as(a[:, :, :width])  # pad columns hold nothing in `each`
        assert torch.allclose(a[:, :, :width][real], b[:, :, :width][real], atol=1e-5, rtol=0)
        assert not b[:, :, :width][~real].any() and not b[:, :, width:].any()


def test_draws_never_pick_a_token_of_zero_weight_whatever_the_uniform():
    """Two-level inverse CDF: a vocabulary that is not a multiple of the block (padding weights 0), tokens masked to
    -inf, and uniforms at both ends of (0, 1): only tokens with weight are drawn, and each uniform's token is the
    one a float64 CDF over the whole row gives."""
    from modeling_llama.decoding import DRAW_BLOCK, draw_from

    vocab = 3 * DRAW_BLOCK + 17
    scores = torch.randn(6, vocab, generator=torch.Generator().manual_seed(0))
    scores[:, 700:] = float("-inf")  # the last block and the padding have no mass
    scores[1, :] = float("-inf")
    scores[1, 5] = 0.0  # one token with all the mass
    uniform = torch.tensor([1e-16, 0.25, 0.5, 0.999, 1 - 2**-53, 0.75], dtype=torch.float64)
    drawn = draw_from(scores, uniform)
    assert bool((drawn < 700).all()) and drawn[1] == 5
    exact = torch.searchsorted((scores.double() - scores.double().amax(-1, keepdim=True)).exp().cumsum(-1),
                               (uniform * (scores.double() - scores.double().amax(-1, keepdim=True)).exp().sum(-1))
                               [:, None], right=True)[:, 0].clamp(max=699)
    assert torch.equal(drawn, exact)
