"""Run configs: presets, files, flags and overrides in the right order; unknown keys are clear errors."""

from __future__ import annotations

import pytest

from training.run_config import RunConfig, available_presets, load_run_config, parse_override


def test_presets_load_and_the_demo_is_the_default_job():
    assert {"tiny", "demo"} <= set(available_presets())
    tiny = RunConfig.from_preset("tiny")
    assert tiny.model_preset == "tiny" and tiny.max_steps < RunConfig.from_preset("demo").max_steps


def test_precedence_preset_then_file_then_flags_then_set(tmp_path):
    file = tmp_path / "run.yaml"
    file.write_text("learning_rate: 1.0e-4\nmax_steps: 7\nseed: 3\nmodel: {num_hidden_layers: 3}\n")
    run = load_run_config("tiny", str(file), {"max_steps": 9, "seed": None},
                          ["seed=5", "model.hidden_size=128", "eval_max_batches=null"])
    assert run.learning_rate == 1e-4  # from the file
    assert run.max_steps == 9  # the flag beats the file
    assert run.seed == 5  # --set beats everything; a None flag means "not given"
    assert run.model == {"num_hidden_layers": 3, "hidden_size": 128}  # model overrides merge
    assert run.eval_max_batches is None
    assert run.vocab_size == RunConfig.from_preset("tiny").vocab_size  # untouched preset value


def test_json_config(tmp_path):
    file = tmp_path / "run.json"
    file.write_text('{"max_steps": 11, "mixed_precision": "bf16"}')
    run = RunConfig.from_file(file)
    assert (run.max_steps, run.mixed_precision) == (11, "bf16")


def test_bad_input_names_the_problem(tmp_path):
    with pytest.raises(ValueError, match="learning_rat.*valid keys"):
        load_run_config("tiny", overrides=["learning_rat=1"])
    with pytest.raises(ValueError, match="Unknown run preset 'nope'"):
        RunConfig.from_preset("nope")
    with pytest.raises(ValueError, match="activation_checkpointing"):
        RunConfig(activation_checkpointing="some")
    with pytest.raises(ValueError, match="key=value"):
        parse_override("max_steps")
    with pytest.raises(FileNotFoundError, match="--config"):
        RunConfig.from_file(tmp_path / "missing.yaml")


def test_batch_tokens_derive_gradient_accumulation():
    run = RunConfig(micro_batch_size=4, seq_len=128, batch_tokens=4096)
    assert run.resolved_accumulation(world_size=1) == 8
    assert run.resolved_accumulation(world_size=2) == 4  # the token batch is global, over all processes
    assert RunConfig(gradient_accumulation_steps=3).resolved_accumulation(2) == 3
    with pytest.raises(ValueError, match="either"):
        RunConfig(gradient_accumulation_steps=2, batch_tokens=4096)
