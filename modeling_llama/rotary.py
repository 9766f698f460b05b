"""Rotary position embeddings (Su et al. 2021; LLaMA §2.2), in the rotate-half layout transformers uses.

Meta's reference rotates interleaved channel pairs (x0,x1), (x2,x3), ... as complex numbers; rotate-half pairs
channel i with i + d/2 instead. The two are the same function once the rows of wq/wk are permuted, which
`convert_meta` does. cos/sin are always computed in float32 (bf16 angles lose precision at long positions) and
cast to the activation dtype only at the end.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def rope_inv_freq(head_dim: int, theta: float, device: torch.device | None = None) -> torch.Tensor:
    """Inverse frequencies 1 / theta^(2i/d), i < d/2, in float32: shape (head_dim/2,)."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q (B, H, T, hd) and k (B, KV, T, hd) by cos/sin of shape (B, T, hd)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # broadcast over heads
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


class LlamaPaperRotary(nn.Module):
    """Produces (cos, sin) of shape (B, T, head_dim) for the given position ids."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        # Not persistent: derived from the config, so never stored in checkpoints. `_init_weights` recomputes it
        # after `from_pretrained`, which otherwise leaves meta-device garbage here.
        self.register_buffer("inv_freq", rope_inv_freq(head_dim, theta), persistent=False)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> LlamaPaperRotary:
        """Casts (`model.to(torch.bfloat16)`, DeepSpeed's `.bfloat16()`) move inv_freq but keep it float32."""
        super()._apply(fn, recurse)
        if self.inv_freq.dtype != torch.float32:
            # Recomputed, not upcast: bf16-rounded frequencies are too coarse. Keeping the buffer float32 also keeps
            # forward from rebuilding it each step, which torch.compile fuses into every layer's rotary kernel
            # (arange + pow per element: ~6% of a compiled 1B step on an H200, benchmarks/RESULTS.md).
            self.inv_freq = rope_inv_freq(self.head_dim, self.theta, device=self.inv_freq.device)
        return self

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x only supplies device and dtype; position_ids is (B, T)."""
        inv_freq = self.inv_freq
        if inv_freq.dtype != torch.float32:  # `model.to(bfloat16)` casts buffers too; bf16 frequencies are too coarse
            inv_freq = rope_inv_freq(self.head_dim, self.theta, device=x.device)
        with torch.autocast(device_type=x.device.type, enabled=False):  # keep the angles in float32
            freqs = position_ids[..., None].float() * inv_freq.to(x.device)
            emb = torch.cat((freqs, freqs), dim=-1)
            return emb.cos().to(x.dtype), emb.sin().to(x.dtype)
