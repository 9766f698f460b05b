"""Activation checkpointing (paper §2.4): same gradients in every mode; full recomputes the matmuls, selective
keeps the linear-layer outputs and recomputes only the element-wise ops."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM
from training.activation_checkpointing import apply_activation_checkpointing, checkpointing_mode

MATMULS = {"aten.mm.default", "aten.addmm.default", "aten.bmm.default"}


class OpCounter(TorchDispatchMode):
    """Counts the aten ops that actually run."""

    def __init__(self):
        super().__init__()
        self.counts = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func)] += 1
        return func(*args, **(kwargs or {}))


def _model(mode: str) -> LlamaPaperForCausalLM:
    torch.manual_seed(0)
    model = LlamaPaperForCausalLM(LlamaPaperConfig.from_preset("tiny", vocab_size=97)).double()
    model.train()
    return apply_activation_checkpointing(model, mode)


def _backward_ops(mode: str):
    model = _model(mode)
    ids = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(1))
    loss = model(input_ids=ids, labels=ids).loss
    counter = OpCounter()
    with counter:
        loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return counter.counts, grads, model


@pytest.fixture(scope="module")
def runs():
    return {mode: _backward_ops(mode) for mode in ("none", "full", "selective")}


def test_modes_are_reported(runs):
    assert {mode: checkpointing_mode(run[2]) for mode, run in runs.items()} == {
        "none": "none", "full": "full", "selective": "selective"}


def test_gradients_identical_in_every_mode(runs):
    reference = runs["none"][1]
    for mode in ("full", "selective"):
        for name, grad in runs[mode][1].items():
            torch.testing.assert_close(grad, reference[name], rtol=1e-10, atol=1e-12, msg=f"{mode}: {name}")


def test_full_recomputes_matmuls_selective_only_elementwise(runs):
    counts = {mode: run[0] for mode, run in runs.items()}
    matmuls = {mode: sum(c[op] for op in MATMULS) for mode, c in counts.items()}
    # Per layer, the forward has 7 linear layers (q, k, v, o, gate, up, down). Full recomputation reruns all but
    # down_proj: non-reentrant checkpointing stops once every tensor backward needs is back, and the last
    # matmul's output is not one of them.
    layers = 2
    assert matmuls["full"] == matmuls["none"] + 6 * layers
    assert matmuls["selective"] == matmuls["none"]  # linear outputs were saved, never recomputed
    # ... while the cheap element-wise ops (RMSNorm's rsqrt, SiLU) are recomputed in backward.
    for op in ("aten.rsqrt.default", "aten.silu.default"):
        assert counts["none"][op] == 0
        assert counts["selective"][op] > 0 and counts["full"][op] > 0
    # and the attention kernel's output is kept too: no attention forward rerun under selective.
    attention = [op for op in counts["full"] if "scaled_dot_product" in op and "backward" not in op]
    assert attention and all(counts["selective"][op] == 0 for op in attention)


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="choose one of none, full, selective"):
        apply_activation_checkpointing(_model("none"), "some")


def test_eager_selective_on_a_gpu_is_flagged_and_nothing_else_is():
    from training.activation_checkpointing import eager_selective_warning

    message = eager_selective_warning("selective", compiled=False, device_type="cuda")
    assert message and "--compile" in message and "full" in message
    for mode, compiled, device in [("selective", True, "cuda"), ("selective", False, "cpu"), ("full", False, "cuda"),
                                   ("none", False, "cuda")]:
        assert eager_selective_warning(mode, compiled, device) is None, (mode, compiled, device)
