"""Checkpoints and exact resume: stop at a checkpoint and resume, SIGKILL at any moment and resume (both end with
the uninterrupted run's weights, bit for bit), SIGTERM writes a checkpoint and exits cleanly; atomic folders."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time

import pytest
import torch
import yaml

from modeling_llama.cli import main as llama_paper
from training.checkpointing import TRAINER_STATE, latest_checkpoint, list_checkpoints
from training.pretrain import pretrain

from .pretrain_helpers import (REPO, assert_same_weights, final_weights, pretrain_command, subprocess_env,
                               tiny_run)

STEPS, SAVE = 40, 5


def _run(output_dir, **overrides):
    values = {"max_steps": STEPS, "save_steps": SAVE, "keep_checkpoints": 20, "log_steps": SAVE, "sample_tokens": 0}
    return tiny_run(output_dir, **{**values, **overrides})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run (one thread, like the launched runs, so floating point matches bit for bit)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("reference") / "run"
    pretrain(_run(out))
    return out


def _metrics(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_checkpoints_every_save_steps_with_trainer_state(reference):
    assert [step for step, _ in list_checkpoints(reference)] == list(range(SAVE, STEPS + 1, SAVE))
    state = json.loads((reference / "checkpoint-10" / TRAINER_STATE).read_text())
    assert state["step"] == 10 and state["tokens_seen"] == 10 * 8 * 64
    assert {"scheduler", "data", "nonfinite_in_a_row", "tracker_step"} <= state.keys()
    assert (reference / "checkpoint-10" / "model.safetensors").is_file()


def test_stop_at_a_checkpoint_and_resume_equals_the_uninterrupted_run(reference, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    out.mkdir()
    shutil.copytree(reference / "checkpoint-15", out / "checkpoint-15")
    (out / "metrics.jsonl").write_text((reference / "metrics.jsonl").read_text())  # including lines after step 15
    pretrain(_run(out, keep_checkpoints=2), resume="latest")
    assert_same_weights(final_weights(out), final_weights(reference))
    assert _metrics(out) == [
        {**r, "elapsed_s": m["elapsed_s"], "tokens_per_s": m["tokens_per_s"]}
        for r, m in zip(_metrics(reference), _metrics(out))
    ]  # resumed from the checkpoint's step: stale lines dropped, the same losses logged again
    assert [step for step, _ in list_checkpoints(out)] == [35, 40]  # only the newest K=2 kept


def _launch(config_file, output_dir):
    return subprocess.Popen(pretrain_command("--config", str(config_file), "--output-dir", str(output_dir)),
                            cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _wait_for(predicate, process, timeout=240.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"run ended early (rc {process.returncode}):\n{process.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.02)


def test_sigkill_mid_run_then_resume_equals_the_uninterrupted_run(reference, tmp_path):
    torch.set_num_threads(1)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(_run(tmp_path / "unused").to_dict()))
    out = tmp_path / "run"
    process = _launch(config, out)
    _wait_for(lambda: (out / "checkpoint-5").is_dir(), process)
    process.send_signal(signal.SIGKILL)  # no handler can run: whatever was being written is left as it is
    process.wait()
    assert not (out / "summary.json").exists(), "the run finished before it was killed"
    resumed_from = latest_checkpoint(out)
    assert resumed_from is not None
    pretrain(_run(out), resume="latest")
    assert_same_weights(final_weights(out), final_weights(reference))
    assert [r["loss"] for r in _metrics(out)] == [r["loss"] for r in _metrics(reference)]


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_run(tmp_path / "unused", max_steps=100_000, save_steps=0, log_steps=1,
                                              sample_tokens=0).to_dict()))
    out = tmp_path / "run"
    process = _launch(config, out)
    _wait_for(lambda: (out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text().count("\n") >= 2,
              process)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output[-3000:]
    assert "Stopped by SIGTERM" in output
    checkpoints = list_checkpoints(out)
    assert len(checkpoints) == 1
    step, folder = checkpoints[0]
    assert step >= 2 and json.loads((folder / TRAINER_STATE).read_text())["step"] == step
    assert not list(out.glob(".tmp-checkpoint-*"))


def test_incomplete_folders_are_never_resumed_from(tmp_path):
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / TRAINER_STATE).write_text("{}")
    (tmp_path / ".tmp-checkpoint-8").mkdir()  # a save that was killed half-way
    (tmp_path / "checkpoint-6").mkdir()  # no trainer state: incomplete
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        pretrain(tiny_run(tmp_path, max_steps=2), resume=str(tmp_path / "checkpoint-6"))


def test_a_damaged_checkpoint_is_reported_with_the_way_out(reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference / "checkpoint-15", out / "checkpoint-15")
    weights = out / "checkpoint-15" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a truncated file, e.g. a full disk
    with pytest.raises(ValueError, match=r"checkpoint-15: its files are damaged.*SafetensorError.*earlier"):
        pretrain(_run(out), resume="latest")
    (out / "checkpoint-15" / TRAINER_STATE).write_text('{"step": 1')
    with pytest.raises(ValueError, match=r"checkpoint-15: its files are damaged.*JSONDecodeError"):
        pretrain(_run(out), resume=str(out / "checkpoint-15"))


def test_consolidating_a_folder_that_is_no_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert llama_paper(["pretrain", "--consolidate", str(tmp_path / "missing"), "--output-dir",
                        str(tmp_path / "out")]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err


def _tensorboard_losses(folder):
    """(step, loss) pairs as TensorBoard shows them (its reader applies the purge a resumed run asks for)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder / "tensorboard"))  # the scalars' event files (hparams live in subfolders)
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars("loss")]


def test_resume_hides_the_tensorboard_points_logged_after_the_checkpoint(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    pretrain(_run(out, max_steps=12, save_steps=4, log_steps=2, tensorboard=True))
    first = _tensorboard_losses(out)
    assert [step for step, _ in first] == list(range(2, 13, 2))
    # As if the run had been killed after step 12 with checkpoint-8 its last: resume from there.
    shutil.rmtree(out / "checkpoint-12")
    (out / "summary.json").unlink()  # written at the very end: a killed run has none
    time.sleep(1.1)  # a second event file (TensorBoard names them by the second)
    pretrain(_run(out, max_steps=12, save_steps=4, log_steps=2, tensorboard=True), resume="latest")
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2
    resumed = _tensorboard_losses(out)
    assert [step for step, _ in resumed] == list(range(2, 13, 2))  # steps 10 and 12 once, not twice
    assert [loss for _, loss in resumed] == pytest.approx([loss for _, loss in first])


@pytest.fixture(scope="module")
def short_reference(tmp_path_factory):
    """8 steps, a checkpoint every 2 and a logging window of 3: windows and checkpoints do not line up."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("short") / "run"
    pretrain(_run(out, max_steps=8, save_steps=2, log_steps=3))
    return out


def test_resume_mid_window_logs_the_uninterrupted_losses_and_sets_newer_checkpoints_aside(short_reference, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    out.mkdir()
    for step in (2, 4, 6, 8):  # as if the run had gone on from checkpoint-4 and is now resumed from it explicitly
        shutil.copytree(short_reference / f"checkpoint-{step}", out / f"checkpoint-{step}")
    shutil.copy(short_reference / "metrics.jsonl", out / "metrics.jsonl")
    pretrain(_run(out, max_steps=8, save_steps=2, log_steps=3, keep_checkpoints=2), resume=str(out / "checkpoint-4"))
    # Step 6's window holds steps 4 (before the checkpoint) and 5-6 (after): its loss is the uninterrupted one.
    losses = [(r["step"], r["loss"]) for r in _metrics(out)]
    assert losses == [(r["step"], r["loss"]) for r in _metrics(short_reference)]
    assert_same_weights(final_weights(out), final_weights(short_reference))
    # The old checkpoint-6/8 continued the abandoned path: renamed, so that pruning and `--resume latest` skip them.
    abandoned = sorted(p.name for p in out.glob("abandoned-checkpoint-*"))
    assert abandoned == ["abandoned-checkpoint-6", "abandoned-checkpoint-8"]
    assert [step for step, _ in list_checkpoints(out)] == [6, 8]


def test_resume_refuses_settings_that_change_the_training(short_reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(short_reference / "checkpoint-4", out / "checkpoint-4")
    for change, named in (({"learning_rate": 1e-4}, "learning_rate 0.003 -> 0.0001"), ({"seed": 1}, "seed 0 -> 1"),
                          ({"model_preset": "small"}, "model_preset 'tiny' -> 'small'")):
        with pytest.raises(ValueError, match=f"other settings than the run it continues.*{named}"):
            pretrain(_run(out, max_steps=8, save_steps=2, log_steps=3, **change), resume="latest")
    assert [step for step, _ in list_checkpoints(out)] == [4]  # refused before anything was touched


def test_resume_alone_continues_with_the_checkpoint_settings_and_a_finished_run_is_left_alone(tmp_path, capsys):
    from .pretrain_helpers import tiny_tokenizer_dir
    torch.set_num_threads(1)
    out = tmp_path / "run"
    first = ["pretrain", "--preset", "tiny", "--tokenizer", str(tiny_tokenizer_dir()), "--output-dir", str(out),
             "--max-steps", "4", "--save-steps", "2", "--set", "tensorboard=false", "--set", "sample_tokens=0",
             "--set", "eval_max_batches=1", "--set", "learning_rate=2e-3"]
    assert llama_paper(first) == 0
    uninterrupted = final_weights(out)
    shutil.rmtree(out / "checkpoint-4")  # as if killed between checkpoint-2 and the end
    (out / "summary.json").unlink()
    # No --preset or --config: the settings come from checkpoint-2 (not from the demo preset).
    assert llama_paper(["pretrain", "--output-dir", str(out), "--resume"]) == 0, capsys.readouterr().err
    assert_same_weights(final_weights(out), uninterrupted)
    capsys.readouterr()
    assert llama_paper(["pretrain", "--output-dir", str(out), "--resume"]) == 2
    assert "finished at step 4: there is nothing to resume" in capsys.readouterr().err


def test_a_signal_repeated_at_once_is_the_same_stop_and_a_later_one_interrupts(monkeypatch):
    # Under `accelerate launch`, Ctrl-C reaches a worker from the terminal and again from the launcher: the second
    # copy used to raise KeyboardInterrupt in the middle of the checkpoint the first one asked for.
    import os

    from training.checkpointing import GracefulStop
    monkeypatch.setattr(GracefulStop, "REPEAT_GRACE_S", 0.5)
    stop = GracefulStop()
    try:
        os.kill(os.getpid(), signal.SIGINT)  # the terminal's
        os.kill(os.getpid(), signal.SIGINT)  # the launcher's, forwarded
        time.sleep(0.05)
        assert stop.requested == "SIGINT"
        time.sleep(0.6)
        with pytest.raises(KeyboardInterrupt):  # a deliberate second Ctrl-C still interrupts
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
    finally:
        stop.restore()
