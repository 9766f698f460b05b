"""Where the processes of a run are: nodes, processes per node, and the parallelism mesh, as the run finds them.

Launchers describe a node in their own environment variables: torchrun (and `accelerate launch`, which runs it) sets
`GROUP_RANK` / `LOCAL_WORLD_SIZE`, DeepSpeed's launcher `CROSS_RANK` / `LOCAL_SIZE`. None of them is trusted alone:
every process contributes (its node's rank, its local rank, its node's process count) to one all-gather, and the
topology is what the gathered table says, checked for consistency (each node's local ranks are 0..n-1). Two
"nodes" started on one machine (the tests) are two nodes here, as they are to the launcher and to gloo/NCCL.

The mesh is read off the prepared model (a DTensor parameter's `device_mesh`: FSDP2, tensor parallel) or the engine
(DeepSpeed ZeRO partitions over all processes, DDP replicates), named as torchtitan names its dimensions:
`dp_replicate` x `dp_shard` x `tp`, whose product must be the world size.
"""

from __future__ import annotations

import os

import torch

from .parallel import mesh_info

# Launcher variables naming this process's node and the number of processes on it, in order of preference.
NODE_RANK_VARIABLES = ("GROUP_RANK", "CROSS_RANK", "NODE_RANK", "SLURM_NODEID")
LOCAL_WORLD_VARIABLES = ("LOCAL_WORLD_SIZE", "LOCAL_SIZE")


def _first_int(names: tuple[str, ...], default: int) -> int:
    for name in names:
        if os.environ.get(name, "").strip().lstrip("-").isdigit():
            return int(os.environ[name])
    return default


def local_placement(world_size: int, rank: int = 0) -> tuple[int, int, int]:
    """(node rank, local rank, processes on this node) from the launcher's environment; a launcher that names no
    local rank (one process, mpirun) counts as one node holding every rank."""
    if "LOCAL_RANK" not in os.environ:
        return 0, rank, world_size
    per_node = _first_int(LOCAL_WORLD_VARIABLES, world_size)
    return _first_int(NODE_RANK_VARIABLES, 0), _first_int(("LOCAL_RANK",), 0), per_node


def node_table(accelerator) -> list[tuple[int, int, int]]:
    """Every process's (node rank, local rank, processes on its node), indexed by global rank (collective)."""
    placement = local_placement(accelerator.num_processes, accelerator.process_index)
    mine = torch.tensor([placement], dtype=torch.long, device=accelerator.device)
    if accelerator.num_processes == 1:
        return [tuple(mine[0].tolist())]
    return [tuple(row) for row in accelerator.gather(mine).cpu().tolist()]


def nodes_from_table(table: list[tuple[int, int, int]]) -> tuple[int, list[int]]:
    """(number of nodes, processes on each node), checked: each node's local ranks are exactly 0..n-1."""
    nodes: dict[int, list[tuple[int, int]]] = {}
    for node, local_rank, per_node in table:
        nodes.setdefault(node, []).append((local_rank, per_node))
    counts = []
    for node, members in sorted(nodes.items()):
        ranks = sorted(rank for rank, _ in members)
        declared = {per_node for _, per_node in members}
        if ranks != list(range(len(members))) or declared != {len(members)}:
            raise RuntimeError(f"Inconsistent launch: node {node} has local ranks {ranks} but declares "
                               f"{sorted(declared)} processes. Start one launcher per node with the same "
                               "--nproc-per-node (or accelerate's --num_processes = total) on every node.")
        counts.append(len(members))
    return len(counts), counts


def topology_info(accelerator, model: torch.nn.Module | None = None) -> dict:
    """run_info.json's topology fields, from the gathered launch table and the prepared model (collective)."""
    table = node_table(accelerator)
    num_nodes, per_node = nodes_from_table(table)
    return {"num_nodes": num_nodes,
            "processes_per_node": per_node[0] if len(set(per_node)) == 1 else per_node,
            "node_ranks": [node for node, _, _ in table],  # global rank -> node
            "mesh": mesh_info(accelerator, model),  # read back from the parameters (training.parallel)
            # torchrun's count of this node's restarts (--max-restarts); per node, not a global attempt id
            "elastic_restart_count": _first_int(("TORCHELASTIC_RESTART_COUNT",), 0)}


__all__ = ["local_placement", "node_table", "nodes_from_table", "topology_info"]
