"""2-process CPU runs (gloo) launched with the shipped accelerate configs: DDP, ZeRO-2, ZeRO-3, ZeRO-3 with
offload, FSDP2. Each really is distributed as configured, they agree with each other's losses, and their
(possibly sharded) checkpoints consolidate into a normal folder that reloads, and resuming the replicated and both
sharded engines from a mid-run checkpoint ends with the uninterrupted run's weights.

Tolerance: all modes start from the same weights (ZeRO-3 builds them under deepspeed.zero.Init, rank 0
initialising each module from the seed as a single process does), clip at 1.0 (DeepSpeed inside its engine) and see
the same global batches, so the losses agree to float32 round-off (~5e-7 measured); we allow 1e-4 nats. A different
initial model is off by ~1e-2 from step 1 on; ZeRO-3 without weight decay on its matrices (zero.Init's empty
placeholders once looked 1-D to the optimizer's grouping) by ~2e-4 after 6 steps. The first DeepSpeed run JIT-builds
its C++ ops into .torch_ext/ (1-2 minutes per op, cold); later runs load them in seconds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from modeling_llama.cli import main as llama_paper
from training.optimizer import lr_multiplier

from .pretrain_helpers import REPO, assert_same_weights, final_weights, subprocess_env, tiny_run

STEPS = 6
LOSS_TOLERANCE = 1e-4
MODES = {  # config -> (distributed_type, zero_stage, parameters sharded across the 2 ranks)
    "cpu-ddp": ("MULTI_CPU", None, False),
    "cpu-zero2": ("DEEPSPEED", 2, False),
    "cpu-zero3": ("DEEPSPEED", 3, True),
    "cpu-zero3-offload": ("DEEPSPEED", 3, True),
    "cpu-fsdp": ("FSDP", None, True),
}
_runs: dict[str, object] = {}


def _launch(config: str, tmp_path_factory):
    """Run the tiny preset for 6 steps under `accelerate launch --config_file training/configs/<config>.yaml`."""
    if config not in _runs:
        folder = tmp_path_factory.mktemp(config)
        run_file = _run_file(folder, max_steps=STEPS, micro_batch_size=4, log_steps=1, save_steps=STEPS // 2,
                             sample_tokens=4)
        _launch_pretrain(config, "--config", str(run_file))
        _runs[config] = folder / "out"
    return _runs[config]


def _run_file(folder, **settings):
    """FOLDER/run.yaml: the tiny run with `settings`, writing into FOLDER/out."""
    run_file = folder / "run.yaml"
    run_file.write_text(yaml.safe_dump(tiny_run(folder / "out", **settings).to_dict()))
    return run_file


def _launch_command(config: str, *target: str) -> list[str]:
    """`accelerate launch --config_file training/configs/<config>.yaml TARGET...` as an argument list."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(REPO / "training" / "configs" / f"{config}.yaml"), *target]


def _launch_pretrain(config: str, *args: str, script: str | None = None, env: dict | None = None) -> str:
    """Launch `-m training.pretrain ARGS` (or SCRIPT ARGS) under `config` to completion; its output."""
    target = [script] if script else ["-m", "training.pretrain"]
    result = subprocess.run(_launch_command(config, *target, *args), cwd=REPO, env=env or subprocess_env(),
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout + result.stderr


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("config", list(MODES))
def test_two_process_run_is_distributed_as_configured_and_agrees_with_ddp(config, tmp_path_factory):
    out = _launch(config, tmp_path_factory)
    kind, stage, sharded = MODES[config]
    info = json.loads((out / "run_info.json").read_text())
    assert (info["world_size"], info["distributed_type"], info["zero_stage"]) == (2, kind, stage)
    assert info["zero3_init"] == (stage == 3)  # ZeRO-3 builds the model partitioned (deepspeed.zero.Init)
    # FSDP2: only rank 0 builds the weights; the agreement with DDP below checks that the broadcast filled the shards
    assert info["fsdp_cpu_ram_efficient_loading"] == (True if kind == "FSDP" else None)
    if sharded:  # each rank holds about half of the parameters (ZeRO-3 partitions, FSDP2 DTensor shards)
        assert info["local_parameter_numel"] <= info["parameters"] // 2 + 1000
    else:
        assert info["local_parameter_numel"] == info["parameters"]
    records = _metrics(out)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    # The schedule advances once per optimizer update, not once per process.
    run = tiny_run(out)
    warmup = max(1, -(-STEPS * 5 // 100))
    assert [r["lr"] for r in records] == pytest.approx(
        [run.learning_rate * lr_multiplier(s, warmup, STEPS) for s in range(STEPS)])
    reference = _metrics(_launch("cpu-ddp", tmp_path_factory))
    assert records[0]["loss"] == pytest.approx(reference[0]["loss"], abs=1e-6)  # the same initial model
    assert [r["loss"] for r in records] == pytest.approx([r["loss"] for r in reference], abs=LOSS_TOLERANCE)
    assert records[-1]["loss"] < records[0]["loss"]


@pytest.mark.parametrize("config", list(MODES))
def test_checkpoint_consolidates_into_a_folder_that_reloads(config, tmp_path_factory, tmp_path):
    from transformers import AutoModelForCausalLM

    import modeling_llama  # noqa: F401

    out = _launch(config, tmp_path_factory)
    folder = tmp_path / "consolidated"
    assert llama_paper(["pretrain", "--consolidate", str(out / f"checkpoint-{STEPS}"), "--output-dir", str(folder)]) == 0
    assert (folder / "tokenizer.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert type(model).__name__ == "LlamaPaperForCausalLM"
    consolidated = final_weights(folder)
    assert_same_weights(consolidated, final_weights(out), atol=1e-6)  # the checkpoint is the final model
    ddp_final = final_weights(_launch("cpu-ddp", tmp_path_factory))
    assert_same_weights(consolidated, ddp_final, atol=1e-4)  # and all modes trained the same weights


@pytest.mark.parametrize("config", ["cpu-ddp", "cpu-zero3", "cpu-fsdp"])
def test_resume_from_a_mid_run_checkpoint_ends_with_the_uninterrupted_weights(config, tmp_path_factory, tmp_path):
    out = _launch(config, tmp_path_factory)
    resumed = tmp_path / "out"
    resumed.mkdir()
    # Each rank's optimizer and RNG state (and, sharded, its parameter shard) comes back from the checkpoint folder.
    shutil.copytree(out / f"checkpoint-{STEPS // 2}", resumed / f"checkpoint-{STEPS // 2}")
    output = _launch_pretrain(config, "--config", str(out.parent / "run.yaml"), "--output-dir", str(resumed),
                              "--resume")
    assert f"Resumed from {resumed / f'checkpoint-{STEPS // 2}'} at step {STEPS // 2}" in output
    assert_same_weights(final_weights(resumed), final_weights(out))
    assert [(r["step"], r["loss"]) for r in _metrics(resumed)] == [(r["step"], r["loss"]) for r in _metrics(out)
                                                                   if r["step"] > STEPS // 2]


def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step_with_a_checkpoint(tmp_path):
    # A scheduler may preempt one node only: the stop flag travels with the step's all-reduce, so every rank
    # leaves the loop after the same step and writes its part of one checkpoint.
    import signal
    import time

    import psutil

    from training.checkpointing import TRAINER_STATE, list_checkpoints
    out = tmp_path / "out"
    run_file = _run_file(tmp_path, max_steps=100_000, micro_batch_size=4, log_steps=1, save_steps=0, sample_tokens=0)
    command = _launch_command("cpu-ddp", "-m", "training.pretrain", "--config", str(run_file))
    launcher = subprocess.Popen(command, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not ((out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text().count("\n") >= 3):
            assert launcher.poll() is None and time.monotonic() < deadline, "the launched run did not start training"
            time.sleep(0.1)
        workers = [p for p in psutil.Process(launcher.pid).children(recursive=True)
                   if "training.pretrain" in " ".join(p.cmdline())]
        rank_1 = [p for p in workers if p.environ().get("RANK") == "1"]
        assert len(workers) == 2 and len(rank_1) == 1
        rank_1[0].send_signal(signal.SIGTERM)  # rank 0 gets no signal at all
        output, _ = launcher.communicate(timeout=240)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 0, output[-3000:]
    assert "Stopped by signal" in output  # rank 0 prints; it learnt of rank 1's signal through the all-reduce
    (step, folder), = list_checkpoints(out)
    assert json.loads((folder / TRAINER_STATE).read_text())["step"] == step >= 3
    assert not (out / "summary.json").exists()


@pytest.mark.parametrize("config", ["cpu-zero2", "cpu-zero3-offload"])
def test_a_nan_loss_mid_accumulation_skips_the_same_update_as_ddp(config, tmp_path_factory):
    # Step 2's second micro-batch has a NaN loss on both ranks. DeepSpeed must drop the whole step like DDP does:
    # skipping that micro-batch's backward once left the first micro-batch's gradients in ZeRO's accumulation
    # buffers, added to step 3's update (weights 8e-3 away from DDP's by step 6).
    def launch(name):
        folder = tmp_path_factory.mktemp(f"nan-{name}")
        run_file = _run_file(folder, max_steps=STEPS, micro_batch_size=4, gradient_accumulation_steps=2, log_steps=1,
                             save_steps=0, sample_tokens=0, eval_max_batches=1)
        output = _launch_pretrain(name, "--config", str(run_file),
                                  script=str(REPO / "tests" / "training" / "launch_with_nan_loss.py"),
                                  env={**subprocess_env(), "NAN_MICRO_BATCHES": "4"})
        assert "step 2: non-finite loss; update skipped" in output  # numbered as metrics.jsonl numbers it
        return folder / "out"

    if "nan-cpu-ddp" not in _runs:
        _runs["nan-cpu-ddp"] = launch("cpu-ddp")
    ddp, out = _runs["nan-cpu-ddp"], launch(config)
    assert [r["grad_norm"] is None for r in _metrics(out)] == [False, True, False, False, False, False]
    assert [r["loss"] for r in _metrics(out)][2:] == pytest.approx([r["loss"] for r in _metrics(ddp)][2:],
                                                                   abs=LOSS_TOLERANCE)
    assert_same_weights(final_weights(out), final_weights(ddp), atol=1e-4)
