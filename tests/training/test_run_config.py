"""Run configs: presets, files, flags and overrides in the right order; unknown keys are clear errors."""

from __future__ import annotations

import warnings

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
    # The 7B preset's 4M-token batch: exact on 256 processes (accumulation 4); on 2048, one micro-step of every
    # process is already 8M tokens: the run must say so instead of silently doubling the batch.
    seven_b = RunConfig.from_preset("7B")
    per_micro_step = seven_b.micro_batch_size * seven_b.seq_len
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exact = seven_b.batch_tokens // per_micro_step
        assert seven_b.resolved_accumulation(world_size=exact) == 1
    with pytest.warns(UserWarning, match=r"each optimizer step sees 8,388,608 tokens \(2.00x\)"):
        assert seven_b.resolved_accumulation(world_size=2 * exact) == 1
    with pytest.raises(ValueError, match="either"):
        RunConfig(gradient_accumulation_steps=2, batch_tokens=4096)


def test_numbers_in_exponent_notation_are_numbers(tmp_path):
    # YAML 1.1 (PyYAML) reads `1e-3` without a dot as a *string*; the README's own --set example uses it.
    config = tmp_path / "run.yaml"
    config.write_text("learning_rate: 3e-4\nadam_eps: 1e-6\nbatch_tokens: 4e6\npeak_tflops: 989\n")
    run = load_run_config("tiny", str(config), {}, ["min_lr_ratio=1e-1"])
    assert (run.learning_rate, run.adam_eps, run.min_lr_ratio) == (3e-4, 1e-6, 0.1)
    assert all(isinstance(x, float) for x in (run.learning_rate, run.adam_eps, run.min_lr_ratio, run.peak_tflops))
    assert run.batch_tokens == 4_000_000 and isinstance(run.batch_tokens, int)
    for bad, message in (("learning_rate=fast", "learning_rate must be a number"),
                         ("max_steps=2.5", "max_steps must be an integer"),
                         ("seq_len=true", "seq_len must be an integer"),
                         ("learning_rate=null", "learning_rate must be a number")):
        with pytest.raises(ValueError, match=message):
            load_run_config("tiny", None, {}, [bad])


def test_model_overrides_must_name_config_fields_with_numbers_as_numbers():
    # `--set model.hiden_size=64` used to be stored, ignored, and the preset's model trained.
    run = load_run_config("tiny", None, {}, ["model.hidden_size=128", "model.rope_theta=1e4"])
    assert run.model == {"hidden_size": 128, "rope_theta": 10000.0} and isinstance(run.model["rope_theta"], float)
    with pytest.raises(ValueError, match=r"Unknown model key\(s\) \['hiden_size'\].*valid keys: .*hidden_size"):
        load_run_config("tiny", None, {}, ["model.hiden_size=64"])
    with pytest.raises(ValueError, match="RunConfig.model.hidden_size must be an integer, got 'abc'"):
        load_run_config("tiny", None, {}, ["model.hidden_size=abc"])


@pytest.mark.parametrize("size", ["7B", "13B", "33B", "65B"])
def test_paper_presets_compile_their_selective_checkpointing(size):
    # Eager selective checkpointing starved an H100 (0.67x of none, slower than full); compiled it cost ~1%.
    run = RunConfig.from_preset(size)
    assert run.activation_checkpointing == "selective" and run.compile is True
    assert run.mixed_precision == "bf16" and run.batch_tokens == 4 * 2**20
