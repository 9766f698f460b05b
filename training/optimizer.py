"""The paper's optimiser (§2.3): AdamW(beta1 0.9, beta2 0.95, weight decay 0.1) with linear warm-up then cosine
decay to 10% of the peak learning rate.

Which parameters get no weight decay (the paper does not say; this is our documented choice):
  * every 1-D parameter, i.e. the RMSNorm gains: decaying a gain towards 0 fights the normalisation itself;
  * the input token embedding `model.embed_tokens.weight`: a row only gets gradient when its token occurs, so
    decay would steadily shrink the rows of rare tokens between their updates.
All linear weights (attention, SwiGLU, and the untied output projection `lm_head`) are decayed.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

NO_DECAY_NAME_SUFFIXES = ("embed_tokens.weight",)


def is_no_decay(name: str, parameter: torch.Tensor) -> bool:
    """True for parameters excluded from weight decay (1-D gains and the input embedding)."""
    # Under deepspeed.zero.Init a parameter is an empty 1-D placeholder; its real shape is `ds_shape`.
    ndim = len(getattr(parameter, "ds_shape", parameter.shape))
    return ndim < 2 or name.endswith(NO_DECAY_NAME_SUFFIXES)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed matrices, and the no-decay parameters (see module docstring)."""
    decay, no_decay = [], []
    decay_names, no_decay_names = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if is_no_decay(name, parameter):
            no_decay.append(parameter)
            no_decay_names.append(name)
        else:
            decay.append(parameter)
            decay_names.append(name)
    return [
        {"params": decay, "weight_decay": weight_decay, "names": decay_names},
        {"params": no_decay, "weight_decay": 0.0, "names": no_decay_names},
    ]


def build_optimizer(model: nn.Module, learning_rate: float, weight_decay: float = 0.1,
                    betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW with the paper's betas and the documented decay / no-decay split."""
    groups = parameter_groups(model, weight_decay)
    for group in groups:  # torch keeps unknown group keys, but DeepSpeed's CPU Adam copies groups; keep them plain
        group.pop("names")
    # The fused kernel (CPU and CUDA) does the whole update in one pass over each tensor: faster than the default
    # per-parameter loop on CPU, same maths.
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for g in groups for p in g["params"])
    # A multi-tensor kernel cannot take DTensors and plain tensors together (tensor parallel without sequence
    # parallel keeps the norm gains plain): such a model gets the per-parameter loop.
    mixed = len({hasattr(p, "device_mesh") for g in groups for p in g["params"]}) > 1
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps, weight_decay=weight_decay,
                             fused=(fused and not mixed) or None, foreach=False if mixed else None)


def lr_multiplier(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.1) -> float:
    """Multiplier of the peak lr for the optimizer update number `step` (0-based).

    Warm-up: (step + 1) / warmup_steps for step < warmup_steps (so update 0 already moves and update
    warmup_steps - 1 uses the peak). Then cosine from 1 at step == warmup_steps to `min_ratio` at the last
    update (step == total_steps - 1): min_ratio + (1 - min_ratio) * (1 + cos(pi * progress)) / 2.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                    min_ratio: float = 0.1) -> LambdaLR:
    """A LambdaLR applying `lr_multiplier`; step it once per optimizer update (never via accelerator.prepare,
    which would step it once per process)."""
    return LambdaLR(optimizer, lambda step: lr_multiplier(step, warmup_steps, total_steps, min_ratio))


__all__ = ["build_optimizer", "build_scheduler", "lr_multiplier", "parameter_groups", "is_no_decay"]
