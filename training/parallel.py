"""Tensor and sequence parallelism (the paper's "model and sequence parallelism", Korthikanti et al. 2022), composed
with FSDP2 on a 2-D device mesh, applied to the model from outside (as torchtitan does): the model code knows nothing.

Mesh: `(dp_shard, tp)`, TP innermost (the fastest links: TP only within a node). Each decoder layer is cut Megatron
style with PyTorch's tensor-parallel API: q/k/v and gate/up column-wise (each rank keeps heads/tp heads and
intermediate/tp SwiGLU channels), o_proj and down_proj row-wise, so one attention or MLP block costs one collective
forward and one backward. With `sequence_parallel` the regions between the blocks (the RMSNorms and the residual
stream) are split along the sequence instead of replicated: the all-reduce becomes a reduce-scatter plus an
all-gather (same traffic) and the norms' activations shrink tp-fold. FSDP2 then shards every (TP-sharded) parameter
over `dp_shard`, per decoder layer.

Accelerate 1.16 cannot run TP x FSDP with transformers 5.25 (its `prepare` imports a class transformers removed; see
the notes), so a TP run keeps the Accelerator for processes, accumulation and logging but builds the parallel model
here and checkpoints it with torch.distributed.checkpoint (training/distributed_checkpoint.py).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import asdict, dataclass

import torch
from torch import nn

# What `accelerate launch` exports from a config's `parallelism_config` block (accelerate/utils/launch.py).
_LAUNCHER_PREFIX = "PARALLELISM_CONFIG_"


@dataclass(frozen=True)
class MeshShape:
    """Sizes of the data- and tensor-parallel mesh dimensions (their product is the world size)."""

    dp_replicate: int = 1  # replicas of the (sharded) model: DDP, ZeRO-1/2 (their parameters are whole on every rank)
    dp_shard: int = 1  # ranks one model's parameters are sharded over: FSDP2, ZeRO-3
    tp: int = 1  # tensor-parallel ranks (split matrices, same batch)

    def as_dict(self) -> dict:
        """{"dp_replicate", "dp_shard", "tp"} for run_info.json."""
        return asdict(self)


def _launcher_size(name: str) -> int | None:
    value = os.environ.get(_LAUNCHER_PREFIX + name)
    return int(value) if value not in (None, "") else None


def configured_mesh(tensor_parallel: int | None, world_size: int) -> MeshShape:
    """The TP x FSDP mesh this run will build, from the run config and the launcher's `parallelism_config`.

    With tp > 1 it also takes the run away from Accelerate's own ND-parallel and FSDP setup (which cannot compose
    them on these versions): the environment flags the launcher set for it are removed from this process.
    """
    launcher_tp = _launcher_size("TP_SIZE") if os.environ.get("ACCELERATE_USE_PARALLELISM_CONFIG") else None
    if tensor_parallel and launcher_tp and tensor_parallel != launcher_tp:
        raise ValueError(f"The run config asks for tensor_parallel={tensor_parallel}, the accelerate config for "
                         f"parallelism_config_tp_size={launcher_tp}: make them agree (or leave tensor_parallel unset).")
    tp = tensor_parallel or launcher_tp or 1
    if world_size % tp:
        raise ValueError(f"tensor_parallel={tp} does not divide the {world_size} processes; launch a multiple of {tp}.")
    for name in ("CP_SIZE", "SP_SIZE", "DP_REPLICATE_SIZE"):
        if tp > 1 and (_launcher_size(name) or 1) != 1:
            raise ValueError(f"parallelism_config_{name.lower()} > 1 is not supported with tensor parallelism here; "
                             "use tp x dp_shard (training/configs/cpu-tp-fsdp.yaml).")
    dp_shard = world_size // tp
    launcher_shard = _launcher_size("DP_SHARD_SIZE") if launcher_tp else None
    if tp > 1 and launcher_shard not in (None, 1, dp_shard):
        raise ValueError(f"parallelism_config_dp_shard_size={launcher_shard} x tp_size={tp} != {world_size} processes.")
    if tp > 1:
        for flag in ("ACCELERATE_USE_PARALLELISM_CONFIG", "ACCELERATE_USE_FSDP"):
            os.environ.pop(flag, None)
    return MeshShape(dp_shard=dp_shard, tp=tp)


def build_mesh(shape: MeshShape, device_type: str):
    """The (dp_shard, tp) DeviceMesh over all processes."""
    from torch.distributed.device_mesh import init_device_mesh
    return init_device_mesh(device_type, (shape.dp_shard, shape.tp), mesh_dim_names=("dp_shard", "tp"))


def check_divisible(config, tp: int) -> None:
    """Heads and SwiGLU channels must split evenly over the TP ranks (each rank keeps whole heads)."""
    sizes = {"num_attention_heads": config.num_attention_heads, "num_key_value_heads": config.num_key_value_heads,
             "intermediate_size": config.intermediate_size}
    bad = {name: value for name, value in sizes.items() if value % tp}
    if bad:
        raise ValueError(f"tensor_parallel={tp} must divide {bad}; choose a tensor_parallel that divides them.")


def apply_tensor_parallel(model: nn.Module, tp_mesh, sequence_parallel: bool) -> None:
    """Shard a LlamaPaperForCausalLM over `tp_mesh` in place (Megatron TP, plus Korthikanti SP if asked)."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (ColwiseParallel, PrepareModuleInput, RowwiseParallel,
                                                   SequenceParallel, parallelize_module)

    check_divisible(model.config, tp_mesh.size())
    if not sequence_parallel:
        # Megatron TP alone: the residual stream and the norms stay plain tensors, replicated on every TP rank (their
        # gradients agree: the column-parallel layers all-reduce the gradient of their replicated input).
        parallelize_module(model, tp_mesh, {"model.embed_tokens": RowwiseParallel(input_layouts=Replicate()),
                                            "lm_head": ColwiseParallel(output_layouts=Replicate())})
        for layer in model.model.layers:
            parallelize_module(layer, tp_mesh, {
                "self_attn.q_proj": ColwiseParallel(), "self_attn.k_proj": ColwiseParallel(),
                "self_attn.v_proj": ColwiseParallel(), "self_attn.o_proj": RowwiseParallel(),
                "mlp.gate_proj": ColwiseParallel(), "mlp.up_proj": ColwiseParallel(),
                "mlp.down_proj": RowwiseParallel()})
        return
    # Sequence parallel (torchtitan's plan): between the blocks the residual stream is a DTensor sharded on the
    # sequence, Shard(1). Keeping it a DTensor (use_local_output=False) lets the model read the full sequence length
    # from its shape (position ids, masks).
    parallelize_module(model, tp_mesh, {
        "model.embed_tokens": RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1),
                                              use_local_output=False),
        "model.norm": SequenceParallel(),
        "lm_head": ColwiseParallel(input_layouts=Shard(1), output_layouts=Replicate()),  # full logits on every rank
    })
    for layer in model.model.layers:
        parallelize_module(layer, tp_mesh, {
            "input_layernorm": SequenceParallel(),
            # Gather the sequence before the column-parallel projections, scatter it again after the row-parallel one.
            "self_attn": PrepareModuleInput(input_layouts=(Shard(1), None, None),
                                            desired_input_layouts=(Replicate(), None, None), use_local_output=True),
            "self_attn.q_proj": ColwiseParallel(),
            "self_attn.k_proj": ColwiseParallel(),
            "self_attn.v_proj": ColwiseParallel(),
            "self_attn.o_proj": RowwiseParallel(output_layouts=Shard(1), use_local_output=False),
            "post_attention_layernorm": SequenceParallel(),
            "mlp": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),),
                                      use_local_output=True),
            "mlp.gate_proj": ColwiseParallel(),
            "mlp.up_proj": ColwiseParallel(),
            "mlp.down_proj": RowwiseParallel(output_layouts=Shard(1), use_local_output=False),
        })


def apply_fsdp(model: nn.Module, dp_mesh, mixed_precision: str) -> None:
    """FSDP2 over the data-parallel mesh dimension: each decoder layer, then the rest (embeddings, norm, head)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if mixed_precision == "bf16" else MixedPrecisionPolicy()
    for layer in model.model.layers:
        fully_shard(layer, mesh=dp_mesh, mp_policy=policy)
    fully_shard(model, mesh=dp_mesh, mp_policy=policy)


def parallelize(model: nn.Module, shape: MeshShape, sequence_parallel: bool, device_type: str,
                mixed_precision: str = "no"):
    """Apply TP (+SP) and, with dp_shard > 1, FSDP2 to `model` in place; returns the DeviceMesh."""
    if mixed_precision == "fp16":
        raise ValueError("mixed_precision fp16 is not supported with tensor_parallel (its loss scaler is not "
                         "DTensor-aware); use bf16.")
    mesh = build_mesh(shape, device_type)
    model.to(device_type)
    apply_tensor_parallel(model, mesh["tp"], sequence_parallel)
    if shape.dp_shard > 1:
        apply_fsdp(model, mesh["dp_shard"], mixed_precision)
    elif mixed_precision == "bf16":  # FSDP2 casts above; a TP-only run autocasts its forward instead
        model.forward = functools.partial(_autocast_forward, model.forward, device_type)
    return mesh


def _autocast_forward(forward, device_type: str, *args, **kwargs):
    with torch.autocast(device_type, dtype=torch.bfloat16):
        return forward(*args, **kwargs)


@torch.no_grad()
def clip_grad_norm_(parameters, max_norm: float) -> torch.Tensor:
    """Clip the global gradient norm of parameters that may be DTensors on different meshes (or plain tensors).

    torch's own clip stacks the per-parameter norms, which needs them all on one mesh; here each DTensor norm is
    made whole first (a scalar all-reduce per parameter: negligible next to a step's gradient traffic).
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    squares = []
    for grad in grads:
        norm = torch.linalg.vector_norm(grad, dtype=torch.float32)
        squares.append((norm.full_tensor() if hasattr(norm, "full_tensor") else norm) ** 2)
    total = torch.stack(squares).sum().sqrt() if squares else torch.zeros(())
    coefficient = min(1.0, max_norm / (float(total) + 1e-6))
    if coefficient < 1.0 and math.isfinite(float(total)):
        for grad in grads:
            grad.mul_(coefficient)
    return total


# Mesh dimension names of other engines (transformers' DistributedConfig says "fsdp", Accelerate "dp_shard_cp").
_MESH_ALIASES = {"fsdp": "dp_shard", "dp_shard_cp": "dp_shard", "shard": "dp_shard", "replicate": "dp_replicate"}


def mesh_info(accelerator, model: nn.Module) -> dict:
    """The mesh as the parameters themselves show it: {"tp", "dp_shard", "dp_replicate"}.

    A DTensor parameter names its mesh; for the engines that hold whole parameters (DDP, ZeRO-1/2) every process is
    a replica, and ZeRO-3 partitions (`ds_tensor`) count as a shard dimension.
    """
    world = accelerator.num_processes
    for parameter in model.parameters():
        mesh = getattr(parameter, "device_mesh", None)
        if mesh is not None:
            names = [_MESH_ALIASES.get(name, name) for name in mesh.mesh_dim_names or ("dp_shard",) * mesh.ndim]
            sizes = dict(zip(names, mesh.shape, strict=True))
            tp, dp_shard = sizes.get("tp", 1), sizes.get("dp_shard", 1)
            if mesh.ndim == 1 and "tp" in sizes:  # TP only; FSDP's mesh is the other parameters' or none
                dp_shard = world // tp
            return MeshShape(dp_replicate=world // (tp * dp_shard), dp_shard=dp_shard, tp=tp).as_dict()
        if hasattr(parameter, "ds_tensor"):
            return MeshShape(dp_shard=world).as_dict()
    return MeshShape(dp_replicate=world).as_dict()


__all__ = ["MeshShape", "configured_mesh", "build_mesh", "apply_tensor_parallel", "apply_fsdp", "parallelize",
           "clip_grad_norm_", "mesh_info"]
