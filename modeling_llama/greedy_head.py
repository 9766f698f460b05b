"""Certified greedy argmax through a half-precision copy of the output projection: the f32 argmax, half the bytes.

Why: batch-1 decoding on a CPU is bound by reading weights, and in small models the output projection dominates
(the `small` preset: 32000 x 256 f32 = 32 MB of the 45 MB of weights read per token). Greedy decoding needs only the
argmax of the logits, not the logits. So we compute approximate logits a = W16 h with an fp16 copy W16 of the weight
(FBGEMM's packed fp16 kernel: f32 activations, f32 accumulation; on this CPU several times faster than the f32
product through MKL), bound every row's error |z_r - a_r| <= e_r rigorously, and recompute the exact f32 logits
only for the rows that could still be the maximum: those whose upper bound a_r + e_r reaches the best lower bound
max_j (a_j - e_j). The argmax among those is the argmax of the f32 logits over the whole vocabulary: a row left out
is below some row's exact logit.

The error bound of row r for a hidden state h (D,), with Delta_r = W_r - W16_r measured once from the values the
kernel actually stores (read back from its packed weight, so no assumption on how it rounds):
- weight rounding:  |Delta_r . h| <= min(max|Delta_r| ||h||_1, ||Delta_r||_2 ||h||_2);
- float rounding of the kernel's f32 accumulation and of the f32 reference logit itself: each <= (D + 2) 2^-24
  ||W_r||_1 ||h||_inf; we take (D + 8) 2^-23 (||W_r||_1 + ||W16_r||_1) ||h||_inf;
all scaled by (1 + 2^-10) for the rounding of computing the bound in f32. Typically one row survives (the bound is
~1e-4 of the logits' spread). When more than `candidates` rows survive (near-uniform logits), that row of the batch
falls back to the full f32 logits. Sampling (temperature > 0) always uses the full f32 logits.

Exactness caveat, as for any reimplementation: the recomputed candidate logits are f32 dot products summed in another
order than the reference's matrix product, so two logits within float rounding of each other (~1e-7 relative) may
rank differently, exactly as between the eager and the compiled model.
"""

from __future__ import annotations

import torch

# Rows recomputed exactly per token; a certificate needs the K-th best upper bound below the best lower bound.
CANDIDATES = 8
_FP16_MAX = 65504.0


def applies_to(weight: torch.Tensor | None) -> bool:
    """Whether a (V, D) output-projection weight can have a certified fp16 copy (f32, CPU, FBGEMM, fp16 range)."""
    return (isinstance(weight, torch.Tensor) and weight.dim() == 2 and weight.dtype == torch.float32
            and weight.device.type == "cpu" and "fbgemm" in torch.backends.quantized.supported_engines
            and bool(weight.detach().abs().max() < _FP16_MAX))


class CertifiedGreedyHead:
    """The argmax of `h @ weight.T` (f32) computed from an fp16 copy plus an exact recompute of the few contenders."""

    def __init__(self, weight: torch.Tensor, candidates: int = CANDIDATES):
        if not applies_to(weight):
            raise ValueError(f"CertifiedGreedyHead needs a (V, D) float32 CPU weight within fp16 range and torch's "
                             f"FBGEMM engine (x86); got {weight.dtype} {tuple(weight.shape)} on {weight.device}. "
                             "Use the full logits otherwise.")
        self.weight = weight.detach()
        self.candidates = min(candidates, weight.shape[0])
        self.packed = torch.ops.quantized.linear_prepack_fp16(self.weight.contiguous(), None)
        stored = torch.ops.quantized.linear_unpack_fp16(self.packed)[0].double()  # what the kernel multiplies
        delta = self.weight.double() - stored
        dim = weight.shape[1]
        slack = (dim + 8) * 2.0**-23 * (self.weight.double().abs().sum(1) + stored.abs().sum(1))
        # (V, 3) per-row bound coefficients, and (3,) their maxima for a bound on every row at once (rounded up).
        coef = torch.stack([delta.abs().amax(1), delta.norm(dim=1), slack], dim=1) * (1 + 2.0**-20)
        self.coef = coef.float()
        self.coef_max = [float(c) for c in coef.amax(0)]
        # The weight this copy was made from, to notice a model trained (changed in place) after it was built.
        self.version = (weight.data_ptr(), weight._version)

    def is_current(self, weight: torch.Tensor) -> bool:
        """Whether `weight` is still the tensor, unchanged, that this fp16 copy was made from."""
        return (weight.data_ptr(), weight._version) == self.version

    @staticmethod
    def _bound(coef: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """Error bounds from coefficients coef[..., 3] (max|Delta|, ||Delta||_2, slack) and hidden (B, D)."""
        norm1, norm2 = hidden.abs().sum(-1, keepdim=True), hidden.norm(dim=-1, keepdim=True)
        max_abs = hidden.abs().amax(-1, keepdim=True)
        dmax, dl2, slack = coef.unbind(-1)
        err = torch.minimum(dmax * norm1, dl2 * norm2) + slack * max_abs
        return err * (1 + 2.0**-10)  # the rounding of these few f32 operations

    def bounds(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(approximate logits (B, V), rigorous bounds (B, V) on their errors) for hidden states (B, D) float32."""
        approx = torch.ops.quantized.linear_dynamic_fp16(hidden, self.packed)
        return approx, self._bound(self.coef, hidden)

    def argmax(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B,) argmax over the vocabulary of the f32 logits `hidden @ weight.T`, for hidden (B, D)."""
        hidden = hidden.float().contiguous()
        approx = torch.ops.quantized.linear_dynamic_fp16(hidden, self.packed)
        top, rows = approx.topk(self.candidates, dim=-1, sorted=True)  # (B, K)
        rows, order = rows.sort(-1)  # ascending ids: argmax's first-index tie rule, as over the full logits
        top = top.gather(-1, order)
        err = self._bound(self.coef[rows], hidden)  # (B, K) per-row bounds of the K best
        best_lower = (top - err).amax(-1, keepdim=True)
        # Rows outside the K have a_r <= the K-th best approximate logit and e_r <= the bound for all rows: if even
        # that sum is below the best lower bound, every row that can be the maximum is among the K (certified).
        # NaN or inf make the test fail, and those batch rows fall back to the full logits.
        err_all = self._bound(torch.tensor(self.coef_max), hidden)  # (B, 1)
        certified = (top.amin(-1, keepdim=True) + err_all < best_lower).squeeze(-1)
        contender = top + err >= best_lower
        exact = torch.bmm(self.weight[rows], hidden[:, :, None])[..., 0]  # (B, K) f32 dot products
        pick = rows.gather(-1, exact.masked_fill(~contender, float("-inf")).argmax(-1, keepdim=True))[:, 0]
        if not bool(certified.all()):
            fallback = (~certified).nonzero()[:, 0]
            pick[fallback] = torch.nn.functional.linear(hidden[fallback], self.weight).argmax(-1)
        return pick


def output_weight(model: torch.nn.Module) -> torch.Tensor | None:
    """The (V, D) weight of the model's output projection when it is a bias-free nn.Linear (logits = h W^T), else
    None: the condition for computing logits from a copy of that weight outside the model."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Linear) or head.bias is not None:
        return None
    return head.weight


def greedy_head_for(model: torch.nn.Module, cache: dict) -> CertifiedGreedyHead | None:
    """The model's certified head (built once, rebuilt if the weight changed), or None when it does not apply."""
    weight = output_weight(model)
    if weight is None:
        return None
    built = cache.get(model)
    if built is None or not built.is_current(weight):
        if not applies_to(weight):
            return None
        built = cache[model] = CertifiedGreedyHead(weight)
    return built
