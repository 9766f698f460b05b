"""The paper's optimiser (§2.3): schedule values against the formula, and the documented no-decay groups."""

from __future__ import annotations

import math

import pytest
import torch

from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM
from training.optimizer import build_optimizer, build_scheduler, lr_multiplier, parameter_groups
from training.run_config import RunConfig

PEAK, WARMUP, TOTAL = 3e-4, 20, 220


def test_schedule_values_at_key_steps_equal_the_formula():
    # Written out by hand: linear warm-up (step+1)/W, then cosine from the peak to 10% at the last update.
    assert lr_multiplier(0, WARMUP, TOTAL) == pytest.approx(1 / 20)
    assert lr_multiplier(WARMUP - 1, WARMUP, TOTAL) == pytest.approx(1.0)  # end of warm-up: the peak
    assert lr_multiplier(WARMUP, WARMUP, TOTAL) == pytest.approx(1.0)  # cosine starts at the peak
    middle = WARMUP + (TOTAL - 1 - WARMUP) / 2  # half-way through the decay: cos(pi/2) = 0
    assert lr_multiplier(int(middle), WARMUP, TOTAL) == pytest.approx(
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (int(middle) - WARMUP) / (TOTAL - 1 - WARMUP))))
    assert lr_multiplier(WARMUP + 100, WARMUP, 2 * 100 + WARMUP + 1) == pytest.approx(0.55)
    assert lr_multiplier(TOTAL - 1, WARMUP, TOTAL) == pytest.approx(0.1)  # the end: 10% of the peak
    values = [lr_multiplier(s, WARMUP, TOTAL) for s in range(TOTAL)]
    assert all(a < b for a, b in zip(values[:WARMUP - 1], values[1:WARMUP]))  # rising during warm-up
    assert all(a >= b for a, b in zip(values[WARMUP:], values[WARMUP + 1:]))  # never rising afterwards
    assert min(values[WARMUP:]) == pytest.approx(0.1)


def test_scheduler_sets_those_values_on_the_optimizer():
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=PEAK)
    scheduler = build_scheduler(optimizer, WARMUP, TOTAL)
    seen = []
    for _ in range(TOTAL):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx(PEAK / WARMUP)
    assert seen[WARMUP - 1] == pytest.approx(PEAK)
    assert seen[TOTAL - 1] == pytest.approx(0.1 * PEAK)


def test_warmup_is_the_papers_2000_steps_at_scale_and_scaled_for_short_runs():
    assert RunConfig(max_steps=250_000).resolved_warmup_steps() == 2000  # 1T tokens / 4M-token batches
    assert RunConfig(max_steps=300).resolved_warmup_steps() == 15  # 5% of a short run
    assert RunConfig(max_steps=300, warmup_steps=7).resolved_warmup_steps() == 7


def _tiny_model() -> LlamaPaperForCausalLM:
    torch.manual_seed(0)
    return LlamaPaperForCausalLM(LlamaPaperConfig.from_preset("tiny", vocab_size=64))


def test_no_decay_groups_are_the_norm_gains_and_the_input_embedding():
    model = _tiny_model()
    decay, no_decay = parameter_groups(model, 0.1)
    names = dict(model.named_parameters())
    assert set(no_decay["names"]) == {n for n in names if "norm" in n} | {"model.embed_tokens.weight"}
    assert set(decay["names"]) == set(names) - set(no_decay["names"])
    assert "lm_head.weight" in decay["names"]  # the untied output projection is decayed
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0


def test_no_decay_groups_are_the_same_for_zero_init_placeholders():
    # Under deepspeed.zero.Init every parameter is an empty 1-D tensor carrying its real shape in `ds_shape`:
    # grouping by `ndim` alone once put every matrix in the no-decay group of ZeRO-3 runs.
    model = _tiny_model()
    expected = [group["names"] for group in parameter_groups(model, 0.1)]
    for parameter in model.parameters():
        parameter.ds_shape = parameter.shape
        parameter.data = torch.empty(0)
    assert [group["names"] for group in parameter_groups(model, 0.1)] == expected


def test_adamw_betas_and_decay_really_applied():
    model = _tiny_model()
    optimizer = build_optimizer(model, learning_rate=0.5, weight_decay=0.1)
    assert all(g["betas"] == (0.9, 0.95) for g in optimizer.param_groups)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # zero gradient: AdamW only applies the decoupled decay p *= 1 - lr * wd
    optimizer.step()
    for name, p in model.named_parameters():
        factor = 1.0 if (p.ndim < 2 or name == "model.embed_tokens.weight") else 1 - 0.5 * 0.1
        torch.testing.assert_close(p.detach(), before[name] * factor, msg=name)
