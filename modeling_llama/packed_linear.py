"""Linear layers through oneDNN's pre-packed float32 weights, for inference on a CPU; applied from outside the model.

Why: `F.linear` on a CPU calls MKL's sgemm. For a product of a few rows with a large weight (decode steps, the
vocabulary projection of a few continuation tokens) it reads the weight at 5-7 GB/s on this project's CPU (AMD
Zen 4), and for many rows it reached ~70 GFLOPS at 1 thread. oneDNN's linear on the weight
reordered once into its blocked layout (`torch.ops.mkldnn._reorder_linear_weight`, what inductor's CPU freezing
uses) ran, as F.linear time / oneDNN time at 1 thread (benchmarks/RESULTS.md, 2026-12-08):

    weight (out x in)   rows: 1     8     64    512-1024
    32000 x 256         1.51  2.38  2.10  1.17      (the `small` preset's vocabulary projection)
    5632 x 2048         0.75  1.49  1.56  1.26      (the `1B` preset's MLP up-projection)
    256 x 256           0.37  0.77  0.99  1.08      (the `small` preset's attention projections)

so `use_onednn` sends a product to oneDNN where it measured faster: vocabulary-sized heads at any row count, large
weights from 2 rows, every weight from 64 rows. The arithmetic is the same float32 product summed in another order:
outputs agree with F.linear within float rounding (~1e-7 relative), as between any two matrix-multiply kernels.

`packed_linears(model)` patches the forward of the model's plain float32 CPU `nn.Linear` layers for the duration of
a block (eager inference only: with autograd on, or for any other layer, F.linear runs unchanged), so the model code
knows nothing of it, and saving, training or compiling the model outside the block sees the model as it was. The
packed copies double the weights' memory and are kept for the next block; they are made only when that fits in half
the memory available.
"""

from __future__ import annotations

import contextlib
import functools
import os
import weakref
from typing import Iterator

import torch
import torch.nn.functional as F

MIN_ROWS = 64  # from here oneDNN is at least as fast for every weight measured
LARGE_WEIGHT = 1 << 20  # elements: from 2 rows, weights this large are faster through oneDNN
HEAD_ASPECT = 16  # out_features >= 16 x in_features: a vocabulary projection, faster through oneDNN at any row count


def applies_to(weight: torch.Tensor | None) -> bool:
    """Whether a (out, in) weight can be packed: a plain float32 CPU tensor (not a DTensor shard), oneDNN in torch."""
    return (isinstance(weight, torch.Tensor) and type(weight) in (torch.Tensor, torch.nn.Parameter)
            and weight.dim() == 2 and weight.dtype == torch.float32 and weight.device.type == "cpu"
            and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


def use_onednn(rows: int, weight: torch.Tensor) -> bool:
    """Whether a product of `rows` input rows with `weight` measured faster through oneDNN (table above)."""
    out_features, in_features = weight.shape
    return (rows >= MIN_ROWS or out_features >= HEAD_ASPECT * in_features
            or (rows >= 2 and weight.numel() >= LARGE_WEIGHT))


class PackedWeight:
    """A (out, in) float32 weight in oneDNN's layout; `packed(x, bias)` is `F.linear(x, weight, bias)`."""

    def __init__(self, weight: torch.Tensor):
        if not applies_to(weight):
            raise ValueError(f"PackedWeight needs a 2-D float32 CPU weight and torch built with oneDNN; got "
                             f"{weight.dtype} {tuple(weight.shape)} on {weight.device}. Use F.linear otherwise.")
        self.version = (weight.data_ptr(), weight._version)
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), MIN_ROWS)

    def is_current(self, weight: torch.Tensor) -> bool:
        """Whether `weight` is still the tensor (and the values) this copy was packed from."""
        return (weight.data_ptr(), weight._version) == self.version

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.packed, bias, "none", [], "")


_PACKED: "weakref.WeakKeyDictionary[torch.nn.Linear, PackedWeight]" = weakref.WeakKeyDictionary()


def packed_weight(module: torch.nn.Linear) -> PackedWeight:
    """The module's packed weight, packed on first use and again after the weight changed (in place or replaced)."""
    packed = _PACKED.get(module)
    if packed is None or not packed.is_current(module.weight):
        packed = _PACKED[module] = PackedWeight(module.weight)
    return packed


def _forward(module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """nn.Linear.forward, through oneDNN where `use_onednn` says so and autograd is off (the weight passed
    `applies_to` when the block began; only what can change per call is checked here)."""
    weight, bias = module.weight, module.bias
    if (torch.is_grad_enabled() or x.dtype != torch.float32 or weight.dtype != torch.float32
            or x.device.type != "cpu" or weight.device.type != "cpu" or x.dim() == 0
            or (bias is not None and bias.dtype != torch.float32)
            or not use_onednn(x.numel() // max(1, x.shape[-1]), weight)):
        return F.linear(x, weight, bias)
    return packed_weight(module)(x, bias)


def _available_bytes() -> int | None:
    """Memory available now (Linux: MemAvailable, which counts reclaimable page cache), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def packable_linears(model: torch.nn.Module) -> list[torch.nn.Linear]:
    """The model's plain `nn.Linear` layers with a packable weight and no forward patched by someone else (an
    accelerate offload hook, or an enclosing `packed_linears`)."""
    return [m for m in model.modules()
            if type(m) is torch.nn.Linear and "forward" not in m.__dict__ and applies_to(m.weight)]


@contextlib.contextmanager
def packed_linears(model: torch.nn.Module, enabled: bool = True) -> Iterator[int]:
    """Within the block, the model's float32 CPU linear layers multiply through oneDNN's packed weights (yields how
    many layers); outside it they are untouched. Does nothing when not `enabled`, when another forward is already
    in place, or when the packed copies would take more than half the memory available."""
    linears = packable_linears(model) if enabled else []
    # Copies made by an earlier block are kept (per layer, until the layer is freed): count only the missing ones,
    # and ask the OS only when there are some (evaluation enters a block per batch).
    missing = sum(m.weight.numel() * 4 for m in linears if m not in _PACKED or not _PACKED[m].is_current(m.weight))
    available = _available_bytes() if missing else None
    if available is not None and missing > available // 2:
        linears = []
    for m in linears:
        m.forward = functools.partial(_forward, m)
    try:
        yield len(linears)
    finally:
        for m in linears:
            m.__dict__.pop("forward", None)
