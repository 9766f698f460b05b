"""Beyond one machine, on 127.0.0.1: two "nodes" of one process each (accelerate launch and torchrun), a worker
killed mid-training that the launcher restarts by itself, and the SLURM scripts' launch commands.

Two launchers on one machine are two nodes to torchrun, gloo and our run (each has its own node rank and LOCAL_RANK
0), so everything a real cluster exercises but the network is exercised here. The references are the single-node
2-process runs of test_distributed.py (shared with it within a session): the same 2 ranks see the same batches, so
DDP's and ZeRO-3's losses and final weights must not depend on how the ranks were spread over nodes.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from training.topology import nodes_from_table

from .pretrain_helpers import REPO, assert_same_weights, final_weights, subprocess_env
from .test_distributed import STEPS, _launch, _launch_command, _metrics, _run_file

LAUNCH = REPO / "training" / "launch"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_nodes(commands: list[list[str]], env: dict | None = None, cwd: Path = REPO) -> list[str]:
    """Start one launcher per "node" at once, wait for all; their outputs (every one must succeed)."""
    nodes = [subprocess.Popen(command, cwd=cwd, env=env or subprocess_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for command in commands]
    try:
        outputs = [node.communicate(timeout=600)[0] for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output[-4000:]
    return outputs


def _run_info(out: Path) -> dict:
    return json.loads((out / "run_info.json").read_text())


def _same_run_as(reference: Path, folder: Path) -> Path:
    """FOLDER/run.yaml: the reference run's settings, writing into FOLDER/out."""
    return _run_file(folder, max_steps=STEPS, micro_batch_size=4, log_steps=1, save_steps=STEPS // 2, sample_tokens=4)


@pytest.mark.parametrize("config, stage, mesh", [
    ("cpu-ddp", None, {"dp_replicate": 2, "dp_shard": 1, "tp": 1}),
    ("cpu-zero3", 3, {"dp_replicate": 1, "dp_shard": 2, "tp": 1}),
])
def test_two_nodes_with_accelerate_launch_train_as_one_node(config, stage, mesh, tmp_path_factory, tmp_path):
    reference = _launch(config, tmp_path_factory)  # 1 node x 2 processes
    run_file = _same_run_as(reference, tmp_path)
    port = str(_free_port())
    _run_nodes([_launch_command(config, "--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip",
                                "127.0.0.1", "--main_process_port", port, "-m", "training.pretrain",
                                "--config", str(run_file)) for rank in (0, 1)])
    out = tmp_path / "out"
    info = _run_info(out)
    # As the run found them (one all-gather of every rank's launcher placement), not as the config says.
    assert (info["world_size"], info["num_nodes"], info["processes_per_node"]) == (2, 2, 1)
    assert info["node_ranks"] == [0, 1] and info["mesh"] == mesh and info["zero_stage"] == stage
    assert _run_info(reference)["num_nodes"] == 1 and _run_info(reference)["processes_per_node"] == 2
    assert [r["loss"] for r in _metrics(out)] == [r["loss"] for r in _metrics(reference)]
    assert_same_weights(final_weights(out), final_weights(reference))


def test_deepspeed_launcher_without_ssh_on_two_nodes_trains_as_one_node(tmp_path_factory, tmp_path):
    # accelerate's `nossh` multi-node launcher runs `deepspeed --hostfile H --no_ssh --node_rank R ...` per node,
    # which passes --local_rank=0 to the module. The hostfile needs two different names for this one machine.
    reference = _launch("cpu-zero3", tmp_path_factory)
    run_file = _same_run_as(reference, tmp_path)
    (tmp_path / "hostfile").write_text("localhost slots=1\n127.0.0.1 slots=1\n")
    port = str(_free_port())
    # cwd: accelerate writes the launch environment to ./.deepspeed_env for the DeepSpeed launcher
    outputs = _run_nodes([_launch_command("cpu-zero3", "--num_machines", "2", "--machine_rank", str(rank),
                                          "--main_process_ip", "127.0.0.1", "--main_process_port", port,
                                          "--deepspeed_multinode_launcher", "nossh", "--deepspeed_hostfile",
                                          str(tmp_path / "hostfile"), "-m", "training.pretrain",
                                          "--config", str(run_file)) for rank in (0, 1)], cwd=tmp_path)
    assert "deepspeed.launcher.launch" in outputs[0] and "--local_rank=0" in outputs[0]  # DeepSpeed's launcher ran
    out = tmp_path / "out"
    info = _run_info(out)
    assert (info["world_size"], info["num_nodes"], info["processes_per_node"], info["zero_stage"]) == (2, 2, 1, 3)
    assert [r["loss"] for r in _metrics(out)] == [r["loss"] for r in _metrics(reference)]
    assert_same_weights(final_weights(out), final_weights(reference))


def test_torchrun_on_two_nodes_with_c10d_trains_as_accelerate_launch(tmp_path_factory, tmp_path):
    # Plain torchrun, no accelerate config: the run finds DDP on CPU from torchrun's environment alone.
    reference = _launch("cpu-ddp", tmp_path_factory)
    run_file = _same_run_as(reference, tmp_path)
    endpoint = f"127.0.0.1:{_free_port()}"
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "two-nodes",
               "-m", "training.pretrain", "--config", str(run_file)]
    _run_nodes([command, command])
    out = tmp_path / "out"
    info = _run_info(out)
    assert (info["world_size"], info["num_nodes"], info["processes_per_node"]) == (2, 2, 1)
    assert sorted(info["node_ranks"]) == [0, 1]  # c10d numbers the nodes in arrival order
    assert info["distributed_type"] == "MULTI_CPU" and info["mesh"] == {"dp_replicate": 2, "dp_shard": 1, "tp": 1}
    assert [r["loss"] for r in _metrics(out)] == [r["loss"] for r in _metrics(reference)]
    assert_same_weights(final_weights(out), final_weights(reference))


def test_a_rank_killed_mid_training_restarts_by_itself_and_ends_with_the_uninterrupted_weights(tmp_path_factory,
                                                                                                tmp_path):
    reference = _launch("cpu-ddp", tmp_path_factory)
    # Checkpoints at steps 2 and 4; rank 1 SIGKILLs itself in step 5 of the first attempt. torchrun stops rank 0,
    # rendezvous again (c10d; TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1, see the README) and starts both again with the
    # same command, whose --resume continues from checkpoint-4.
    run_file = _run_file(tmp_path, max_steps=STEPS, micro_batch_size=4, log_steps=1, save_steps=2, sample_tokens=4)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "--max-restarts", "1", str(REPO / "tests" / "training" / "launch_with_dying_rank.py"),
               "--config", str(run_file), "--resume"]
    env = {**subprocess_env(), "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1", "DIE_RANK": "1", "DIE_AT_CALL": "5"}
    output, = _run_nodes([command], env=env)
    out = tmp_path / "out"
    assert "No checkpoint in" in output and f"Resumed from {out / 'checkpoint-4'} at step 4." in output
    assert "failed (exitcode: -9) local_rank: 1" in output  # torchrun saw rank 1 die of SIGKILL
    info = _run_info(out)  # rewritten by the restarted attempt
    assert info["resumed_from"] == str(out / "checkpoint-4") and info["elastic_restart_count"] == 1
    assert [(r["step"], r["loss"]) for r in _metrics(out)] == [(r["step"], r["loss"]) for r in _metrics(reference)]
    assert_same_weights(final_weights(out), final_weights(reference))


def test_node_table_finds_nodes_and_refuses_an_inconsistent_launch():
    assert nodes_from_table([(0, 0, 2), (0, 1, 2), (1, 0, 2), (1, 1, 2)]) == (2, [2, 2])
    assert nodes_from_table([(0, 0, 1)]) == (1, [1])
    with pytest.raises(RuntimeError, match="node 1 has local ranks \\[0, 0\\]"):
        nodes_from_table([(0, 0, 1), (1, 0, 1), (1, 0, 1)])  # two processes claim local rank 0 on node 1


# --- SLURM --------------------------------------------------------------------------------------------------------
FAKE_SRUN = """#!/usr/bin/env bash
# srun as SLURM runs a --ntasks-per-node=1 step: the command once per node, with that node's SLURM_NODEID.
while [[ "$1" == --* ]]; do shift; done
for ((node = 0; node < SLURM_NNODES; node++)); do SLURM_NODEID=$node SLURM_PROCID=$node "$@" || exit $?; done
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
[[ "$1 $2" == "show hostnames" ]] && printf 'gpu-node-%s\\n' 017 018
"""
RECORDER = """#!/usr/bin/env bash
# Records how it was called (one JSON line: program, argv, the environment variables a launch depends on).
python3 -c 'import json, os, sys; print(json.dumps({"program": os.path.basename(sys.argv[1]), "argv": sys.argv[2:],
  "share_store": os.environ.get("TORCH_DISABLE_SHARE_RDZV_TCP_STORE")}))' "$0" "$@" >> "$RECORD"
"""


def _fake_cluster(folder: Path) -> dict:
    """A PATH whose srun/scontrol act as SLURM's, and whose accelerate/torchrun only record their arguments."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL), ("accelerate", RECORDER),
                       ("torchrun", RECORDER)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RECORD": str(folder / "calls"),
            "SLURM_JOB_ID": "4242", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "gpu-node-[017-018]",
            "SLURM_GPUS_ON_NODE": "8", "RUN_CONFIG": "training/configs/runs/7B.yaml",
            "OUTPUT_DIR": "/shared/runs/7B"}


@pytest.mark.parametrize("script", ["pretrain-accelerate.sbatch", "pretrain-torchrun.sbatch"])
def test_slurm_scripts_start_one_elastic_launcher_per_node_that_resumes(script, tmp_path):
    env = _fake_cluster(tmp_path)
    subprocess.run(["bash", str(LAUNCH / script), "--set", "log_steps=5"], cwd=REPO, env=env, check=True,
                   timeout=60)
    calls = [json.loads(line) for line in (tmp_path / "calls").read_text().splitlines()]
    assert len(calls) == 2 and all(call["share_store"] == "1" for call in calls)
    tail = ["-m", "training.pretrain", "--config", "training/configs/runs/7B.yaml", "--output-dir", "/shared/runs/7B",
            "--resume", "latest", "--set", "log_steps=5"]
    for node, call in enumerate(calls):
        argv = call["argv"]
        assert argv[-len(tail):] == tail
        head = argv[:-len(tail)]
        if script.startswith("pretrain-accelerate"):
            assert call["program"] == "accelerate" and head.pop(0) == "launch"
        options = dict(zip(head[::2], head[1::2], strict=True))
        if script.startswith("pretrain-accelerate"):
            assert options == {"--config_file": "training/configs/gpu-fsdp.yaml", "--num_machines": "2",
                               "--num_processes": "16", "--machine_rank": str(node),
                               "--main_process_ip": "gpu-node-017", "--main_process_port": "29500",
                               "--rdzv_backend": "c10d", "--max_restarts": "3"}
        else:
            assert call["program"] == "torchrun"
            assert options == {"--nnodes": "2", "--nproc-per-node": "8", "--rdzv-backend": "c10d",
                               "--rdzv-endpoint": "gpu-node-017:29500", "--rdzv-id": "4242",
                               "--max-restarts": "3"}


def test_local_placement_reads_each_launcher(monkeypatch):
    from training.topology import local_placement

    for name in ("LOCAL_RANK", "LOCAL_WORLD_SIZE", "LOCAL_SIZE", "GROUP_RANK", "CROSS_RANK", "NODE_RANK",
                 "SLURM_NODEID"):
        monkeypatch.delenv(name, raising=False)
    assert local_placement(4, rank=3) == (0, 3, 4)  # no launcher naming local ranks: one node
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_SIZE", "2")  # DeepSpeed's launcher
    monkeypatch.setenv("CROSS_RANK", "1")
    assert local_placement(4, rank=3) == (1, 1, 2)
    monkeypatch.setenv("GROUP_RANK", "0")  # torchrun's wins
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert local_placement(4, rank=1) == (0, 1, 4)
