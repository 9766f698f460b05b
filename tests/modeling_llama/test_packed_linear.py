"""Linear layers through oneDNN's pre-packed weights for CPU inference (modeling_llama/packed_linear.py)."""

import contextlib

import pytest
import torch

from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM
from modeling_llama import decoding, packed_linear
from modeling_llama.decoding import Sampling, generate_tokens
from modeling_llama.packed_linear import PackedWeight, applies_to, packed_linears, use_onednn


def tiny(vocab: int = 300) -> LlamaPaperForCausalLM:
    torch.manual_seed(0)
    return LlamaPaperForCausalLM(LlamaPaperConfig.from_preset("tiny", vocab_size=vocab)).eval()


def test_applies_to_float32_cpu_weights_only():
    assert applies_to(torch.zeros(4, 2)) and applies_to(torch.nn.Parameter(torch.zeros(4, 2)))
    assert not applies_to(torch.zeros(4, 2, dtype=torch.float64)) and not applies_to(torch.zeros(4))
    assert not applies_to(torch.zeros(4, 2, device="meta"))


@pytest.mark.parametrize("shape", [(1, 64), (5, 64), (3, 7, 64)])
def test_products_equal_f_linear_within_float_rounding(shape):
    torch.manual_seed(0)
    weight, bias, x = torch.randn(1000, 64) * 0.05, torch.randn(1000), torch.randn(*shape)
    packed = PackedWeight(weight)
    assert torch.allclose(packed(x), torch.nn.functional.linear(x, weight), atol=1e-5, rtol=0)
    assert torch.allclose(packed(x, bias), torch.nn.functional.linear(x, weight, bias), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="float32 CPU weight"):
        PackedWeight(weight.double())


def test_routing_follows_the_measured_table():
    head, small, large = torch.empty(32000, 256), torch.empty(256, 256), torch.empty(5632, 2048)
    assert use_onednn(1, head) and use_onednn(8, head)  # vocabulary projections: any row count
    assert not use_onednn(8, small) and use_onednn(64, small)  # small weights: only many rows
    assert not use_onednn(1, large) and use_onednn(2, large)  # large weights: a one-row product stays with MKL


def test_model_inside_the_block_gives_the_same_logits_and_is_restored_after(monkeypatch):
    model = tiny()
    calls = []
    real = PackedWeight.__call__
    monkeypatch.setattr(PackedWeight, "__call__", lambda self, x, b=None: calls.append(x.shape) or real(self, x, b))
    ids = torch.randint(0, 300, (2, 70))  # 140 rows: every product goes through oneDNN
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        plain = model(ids).logits
        with packed_linears(model) as n:
            assert n == len(linears) == 2 * 7 + 1  # 2 layers x (q, k, v, o, gate, up, down) + the head
            assert all("forward" in m.__dict__ for m in linears)
            packed = model(ids).logits
        assert torch.allclose(packed, plain, atol=1e-5, rtol=0) and len(calls) == n  # each product through oneDNN
        assert not any("forward" in m.__dict__ for m in model.modules())  # restored: nothing left patched
        assert torch.equal(model(ids).logits, plain)


def test_counts_products_sent_to_onednn_and_keeps_autograd_on_f_linear(monkeypatch):
    model = tiny(vocab=2000)  # a vocabulary projection (2000 x 64): oneDNN at any row count
    calls = []
    real = PackedWeight.__call__
    monkeypatch.setattr(PackedWeight, "__call__", lambda self, x, b=None: calls.append(x.shape) or real(self, x, b))
    ids = torch.randint(0, 2000, (1, 3))
    with packed_linears(model):
        with torch.no_grad():
            model(ids)
        assert calls == [(1, 3, 64)]  # 3 rows: only the head (the layers' small weights stay with MKL)
        calls.clear()
        loss = model(torch.randint(0, 2000, (2, 70)), labels=torch.randint(0, 2000, (2, 70))).loss
        loss.backward()  # autograd on: F.linear everywhere, gradients flow
    assert not calls and model.lm_head.weight.grad is not None


def test_repacked_after_an_in_place_change_and_nested_blocks_restore_once():
    model = tiny()
    ids = torch.randint(0, 300, (2, 70))
    with torch.no_grad(), packed_linears(model):
        before = model(ids).logits
        model.lm_head.weight.mul_(2)
        with packed_linears(model) as inner:
            assert inner == 0  # already patched by the outer block
        after = model(ids).logits
        assert "forward" in model.lm_head.__dict__  # the inner block did not undo the outer one
        assert torch.allclose(after, 2 * before, atol=1e-4, rtol=1e-5)


def test_not_applied_when_the_copies_would_not_fit(monkeypatch):
    model = tiny()
    monkeypatch.setattr(packed_linear, "_available_bytes", lambda: 1000)
    with packed_linears(model) as n:
        assert n == 0 and not any("forward" in m.__dict__ for m in model.modules())
    monkeypatch.undo()
    with torch.no_grad(), packed_linears(model) as n:
        model(torch.randint(0, 300, (2, 70)))  # packs every layer
    monkeypatch.setattr(packed_linear, "_available_bytes", lambda: 1000)
    with packed_linears(model) as again:  # the copies exist already: no memory needed, so the block applies
        assert again == n == 15


def test_eager_decoding_goes_through_it_and_draws_what_f_linear_draws(monkeypatch):
    model = tiny(vocab=2000)
    prompts = [[1, 5, 9, 14], [1, 7]]
    sampling = Sampling(temperature=0.9, seed=5)
    calls = []
    real = PackedWeight.__call__
    monkeypatch.setattr(PackedWeight, "__call__", lambda self, x, b=None: calls.append(x.shape) or real(self, x, b))
    packed = generate_tokens(model, prompts, 12, sampling, num_samples=3, compile=False)
    assert (6, 1, 64) in calls  # the decode steps' vocabulary projection: 2 prompts x 3 samples
    monkeypatch.setattr(decoding, "packed_linears", lambda *a, **k: contextlib.nullcontext(0))  # plain F.linear
    assert generate_tokens(model, prompts, 12, sampling, num_samples=3, compile=False) == packed
