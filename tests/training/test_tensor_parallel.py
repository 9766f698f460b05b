"""Tensor (+ sequence) parallelism and TP x FSDP2 on CPU processes (gloo), launched with the shipped accelerate
configs, against a single-process run of the same global batch; DCP checkpoints (written in the background with
`async_checkpoint`) that resume exactly and survive a crash in the middle of a save.

Tolerance: TP splits each matmul's reduction over two ranks, so sums are added in another order: the losses agree to
~1e-7 relative (measured), the weights after Adam to ~2e-5 (Adam's normalised update turns round-off in a near-zero
gradient into up to lr-sized steps). A wrong split (a missing all-reduce, a mis-sharded head) is off by > 1e-2 from
step 1. A resume on the same mesh replays the same operations: bit-exact.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from modeling_llama.cli import main as llama_paper
from training.checkpointing import latest_checkpoint

from .pretrain_helpers import REPO, assert_same_weights, final_weights, subprocess_env, tiny_run

STEPS = 4
MICRO = 4
LOSS_RTOL = 1e-4
WEIGHT_ATOL = 1e-4
_runs: dict[str, object] = {}


def _run_file(folder, **settings):
    run_file = folder / "run.yaml"
    values = dict(max_steps=STEPS, micro_batch_size=MICRO, log_steps=1, save_steps=STEPS // 2, sample_tokens=4)
    run_file.write_text(yaml.safe_dump(tiny_run(folder / "out", **{**values, **settings}).to_dict()))
    return run_file


def _run(command: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, env=env or subprocess_env(), capture_output=True, text=True, timeout=900)


def _launch(config: str, *args: str) -> str:
    """`accelerate launch --config_file training/configs/<config>.yaml -m training.pretrain ARGS` to completion."""
    result = _run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                   str(REPO / "training" / "configs" / f"{config}.yaml"), "-m", "training.pretrain", *args])
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout + result.stderr


def _single(name: str, tmp_path_factory, micro: int):
    """The single-process reference: the same global batch (micro x data-parallel ranks) in one process."""
    if name not in _runs:
        folder = tmp_path_factory.mktemp(name)
        result = _run([sys.executable, "-m", "training.pretrain", "--config",
                       str(_run_file(folder, micro_batch_size=micro))])
        assert result.returncode == 0, result.stderr[-3000:]
        _runs[name] = folder / "out"
    return _runs[name]


def _parallel(name: str, tmp_path_factory):
    """cpu-tp: tp=2 with sequence parallelism and async checkpoints; cpu-tp-fsdp: tp=2 x dp_shard=2, Megatron TP
    without SP (norms replicated) and synchronous DCP checkpoints."""
    if name not in _runs:
        folder = tmp_path_factory.mktemp(name)
        settings = {"async_checkpoint": True} if name == "cpu-tp" else {"sequence_parallel": False}
        _launch(name, "--config", str(_run_file(folder, **settings)))
        _runs[name] = folder / "out"
    return _runs[name]


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# config -> (processes, mesh, single-process reference's micro-batch)
MODES = {"cpu-tp": (2, {"tp": 2, "dp_shard": 1, "dp_replicate": 1}, MICRO),
         "cpu-tp-fsdp": (4, {"tp": 2, "dp_shard": 2, "dp_replicate": 1}, 2 * MICRO)}


@pytest.mark.parametrize("config", list(MODES))
def test_tensor_parallel_run_matches_a_single_process_and_names_its_mesh(config, tmp_path_factory):
    processes, mesh, micro = MODES[config]
    out = _parallel(config, tmp_path_factory)
    reference = _single(f"single-{micro}", tmp_path_factory, micro)
    info = json.loads((out / "run_info.json").read_text())
    assert (info["world_size"], info["mesh"]) == (processes, mesh)  # read back from the parameters' DeviceMesh
    # every parameter matrix is split over the tp x dp_shard ranks (norm gains and odd rows aside)
    assert info["local_parameter_numel"] <= info["parameters"] // (mesh["tp"] * mesh["dp_shard"]) + 2000
    records, expected = _metrics(out), _metrics(reference)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in records] == pytest.approx([r["loss"] for r in expected], rel=LOSS_RTOL)
    assert [r["grad_norm"] for r in records] == pytest.approx([r["grad_norm"] for r in expected], rel=LOSS_RTOL)
    assert records[-1]["loss"] < records[0]["loss"]
    assert_same_weights(final_weights(out), final_weights(reference), atol=WEIGHT_ATOL)


def test_tensor_parallel_checkpoint_consolidates_into_the_final_model(tmp_path_factory, tmp_path):
    out = _parallel("cpu-tp-fsdp", tmp_path_factory)
    checkpoint = out / f"checkpoint-{STEPS}"
    assert (checkpoint / "model_optimizer" / ".metadata").is_file()  # DCP, each rank's TP x FSDP shards
    assert llama_paper(["pretrain", "--consolidate", str(checkpoint), "--output-dir", str(tmp_path / "c")]) == 0
    assert_same_weights(final_weights(tmp_path / "c"), final_weights(out))


def test_resume_under_tensor_parallel_from_an_async_checkpoint_is_exact(tmp_path_factory, tmp_path):
    out = _parallel("cpu-tp", tmp_path_factory)
    middle = f"checkpoint-{STEPS // 2}"
    state = json.loads((out / middle / "trainer_state.json").read_text())
    assert state["step"] == STEPS // 2 and state["run_config"]["async_checkpoint"] is True
    resumed = tmp_path / "out"
    resumed.mkdir()
    shutil.copytree(out / middle, resumed / middle)
    output = _launch("cpu-tp", "--config", str(out.parent / "run.yaml"), "--output-dir", str(resumed), "--resume")
    assert f"Resumed from {resumed / middle} at step {STEPS // 2}" in output
    assert_same_weights(final_weights(resumed), final_weights(out))  # bit-exact: model, Adam moments, data, RNG
    assert [(r["step"], r["loss"]) for r in _metrics(resumed)] == [(r["step"], r["loss"]) for r in _metrics(out)
                                                                   if r["step"] > STEPS // 2]


def test_a_crash_during_an_async_save_leaves_the_previous_checkpoint_and_resume_is_exact(tmp_path_factory,
                                                                                          tmp_path):
    reference = _single(f"single-{MICRO}", tmp_path_factory, MICRO)
    run_file = _run_file(tmp_path, async_checkpoint=True, save_steps=1)
    out = tmp_path / "out"
    crashed = _run([sys.executable, str(REPO / "tests" / "training" / "launch_with_crash_in_async_save.py"),
                    "--config", str(run_file)], env={**subprocess_env(), "CRASH_AT_STEP": "3"})
    assert crashed.returncode == 17, crashed.stderr[-3000:]
    assert (out / ".tmp-checkpoint-3" / "model_optimizer").is_dir()  # the shard files were written...
    assert not (out / ".tmp-checkpoint-3" / "model_optimizer" / ".metadata").exists()  # ...the save never finished
    assert latest_checkpoint(out) == out / "checkpoint-2"
    result = _run([sys.executable, "-m", "training.pretrain", "--config", str(run_file), "--resume"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resumed from {out / 'checkpoint-2'} at step 2" in result.stdout + result.stderr
    # The same updates as the uninterrupted single-process run (written with Accelerate's synchronous save_state).
    assert_same_weights(final_weights(out), final_weights(reference))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]  # keep_checkpoints 2
    assert not os.path.exists(out / ".tmp-checkpoint-3")


def test_a_mesh_that_does_not_fit_the_processes_is_refused_with_the_fix(monkeypatch):
    from training.parallel import MeshShape, check_divisible, configured_mesh

    monkeypatch.setenv("ACCELERATE_USE_PARALLELISM_CONFIG", "true")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("PARALLELISM_CONFIG_TP_SIZE", "2")
    with pytest.raises(ValueError, match="tensor_parallel=4.*parallelism_config_tp_size=2"):
        configured_mesh(4, 4)
    with pytest.raises(ValueError, match="does not divide the 3 processes"):
        configured_mesh(None, 3)
    assert configured_mesh(None, 4) == MeshShape(dp_replicate=1, dp_shard=2, tp=2)
    # The run has left Accelerate's own ND-parallel/FSDP path (it cannot compose TP with FSDP on these versions).
    assert "ACCELERATE_USE_PARALLELISM_CONFIG" not in os.environ and "ACCELERATE_USE_FSDP" not in os.environ
    from modeling_llama import LlamaPaperConfig
    with pytest.raises(ValueError, match="must divide"):
        check_divisible(LlamaPaperConfig.from_preset("tiny"), 3)  # 4 heads do not split over 3 ranks
