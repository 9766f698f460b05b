"""Activation checkpointing applied from outside the model: none, full, or selective (paper §2.4).

* full: every decoder layer (a transformers `GradientCheckpointingLayer`) keeps only its input and recomputes its
  whole forward during backward (`model.activation_checkpointing_enable`).
* selective: the paper "saves the activations that are expensive to compute, such as the outputs of linear
  layers" and recomputes the rest. Each decoder layer runs under `torch.utils.checkpoint` with a
  selective-checkpoint policy: outputs of matrix multiplications (linear layers) and of the attention kernel
  are saved; the cheap element-wise ops (RMSNorm, RoPE, SiLU, the SwiGLU product, residual adds) are recomputed.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

MODES = ("none", "full", "selective")

_aten = torch.ops.aten
# The expensive ops whose outputs are kept: linear layers lower to mm/addmm (bmm/matmul for batched products),
# and every fused attention kernel (its output and log-sum-exp; recomputing it would cost as much as the matmuls).
SAVED_OPS = {
    _aten.mm.default, _aten.addmm.default, _aten.bmm.default, _aten.baddbmm.default, _aten.matmul.default,
    _aten.linear.default,
    _aten._scaled_dot_product_flash_attention.default,
    _aten._scaled_dot_product_efficient_attention.default,
    _aten._scaled_dot_product_cudnn_attention.default,
    _aten._scaled_dot_product_flash_attention_for_cpu.default,
}


def selective_policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    """Save the outputs of matmuls and attention kernels; recompute everything else."""
    return CheckpointPolicy.MUST_SAVE if op in SAVED_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def selective_context():
    """Context pair for `torch.utils.checkpoint.checkpoint(context_fn=...)` implementing `selective_policy`."""
    return create_selective_checkpoint_contexts(selective_policy)


def apply_activation_checkpointing(model: nn.Module, mode: str) -> nn.Module:
    """Enable activation checkpointing `mode` ("none", "full" or "selective") on a transformers model in place."""
    if mode not in MODES:
        raise ValueError(f"Unknown activation checkpointing mode {mode!r}; choose one of {', '.join(MODES)}.")
    if mode == "none":
        if checkpointing_mode(model) != "none":
            model.activation_checkpointing_disable()
        return model
    kwargs: dict = {"use_reentrant": False}
    if mode == "selective":
        kwargs["context_fn"] = selective_context
    model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    model.config.use_cache = False  # a cache is useless in training and conflicts with recomputation
    return model


def eager_selective_warning(mode: str, compiled: bool, device_type: str) -> str | None:
    """Why `mode` is a poor choice on this device without torch.compile, or None when it is not."""
    # In eager mode the selective policy runs as a Python dispatch mode on every op of the forward and of its
    # recomputation, which leaves a GPU waiting on the host. Measured (benchmarks/RESULTS.md, 1B preset, 4 x 2048,
    # bf16): on an H100, eager selective ran at 0.67x of no checkpointing, slower than full (0.80x); on an H200,
    # compiled, where the policy becomes part of the graph, selective ran at 0.99x of no checkpointing. On a CPU the
    # element-wise ops themselves dominate and the two modes cost about the same either way.
    if mode != "selective" or compiled or device_type != "cuda":
        return None
    return ("activation_checkpointing 'selective' without --compile runs its save/recompute policy through a Python "
            "dispatch mode on every op, which starves a GPU: measured on an H100 it was slower than 'full' "
            "(0.67x vs 0.80x of no checkpointing). Add --compile (compiled, selective ran at 0.99x on an H200) or use "
            "activation_checkpointing: full.")


def checkpointing_mode(model: nn.Module) -> str:
    """Which mode is active on `model` ("none", "full" or "selective")."""
    for module in model.modules():
        if getattr(module, "gradient_checkpointing", False) and hasattr(module, "_gradient_checkpointing_func"):
            func = module._gradient_checkpointing_func
            keywords = func.keywords if isinstance(func, functools.partial) else {}
            return "selective" if keywords.get("context_fn") is selective_context else "full"
    return "none"


__all__ = ["apply_activation_checkpointing", "checkpointing_mode", "eager_selective_warning", "selective_policy",
           "selective_context", "MODES", "SAVED_OPS"]
