"""The output projection as oneDNN's pre-packed float32 matrix, for eager decoding steps on a CPU.

Why: a decode step multiplies a few rows (B = the live rows of the batch) by the (V, D) output projection. Through
`F.linear` (MKL's sgemm) such skinny products read the 32000 x 256 weight of the `small` preset at 5-7 GB/s on this
project's CPU (AMD Zen 4); oneDNN's linear on the same weight reordered once into its blocked layout ran 2.4x faster at
B = 16 and 1.2x at B = 1 (benchmarks/RESULTS.md). The arithmetic is the same float32 product summed in another order,
so the logits are within float rounding (~1e-7) of `F.linear`'s, as between any two matrix-multiply kernels.
Used for sampled decoding (greedy decoding has greedy_head.py); the model code knows nothing of it.
"""

from __future__ import annotations

import torch

from .greedy_head import output_weight


def applies_to(weight: torch.Tensor | None) -> bool:
    """Whether a (V, D) output-projection weight can be packed: float32, on the CPU, oneDNN built into torch."""
    return (isinstance(weight, torch.Tensor) and weight.dim() == 2 and weight.dtype == torch.float32
            and weight.device.type == "cpu" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


class PackedProjection:
    """`hidden (B, D) -> logits (B, V)` with the weight in oneDNN's layout; `rows` is the batch size it is tuned for."""

    def __init__(self, weight: torch.Tensor, rows: int):
        if not applies_to(weight):
            raise ValueError(f"PackedProjection needs a (V, D) float32 CPU weight and torch built with oneDNN; got "
                             f"{weight.dtype} {tuple(weight.shape)} on {weight.device}. Use F.linear otherwise.")
        self.version = (weight.data_ptr(), weight._version)
        self.rows = rows
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows)

    def is_current(self, weight: torch.Tensor) -> bool:
        """Whether `weight` is still the tensor (and the values) this copy was packed from."""
        return (weight.data_ptr(), weight._version) == self.version

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(hidden.float().contiguous(), self.packed, None, "none", [], "")


def packed_projection_for(model: torch.nn.Module, rows: int, cache: dict) -> PackedProjection | None:
    """The model's packed output projection (built once per batch size, rebuilt if the weight changed), or None."""
    weight = output_weight(model)
    if not applies_to(weight):
        return None
    built = cache.get(model)
    if built is None or built.rows != rows or not built.is_current(weight):
        built = cache[model] = PackedProjection(weight, rows)
    return built
