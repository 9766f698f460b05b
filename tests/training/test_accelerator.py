"""build_accelerator: the run config's precision wins over the launcher's, and a disagreement is said aloud; the
expected distribution is read from what `accelerate launch` exports."""

import json
import warnings

import pytest

from training.accelerator import build_accelerator, configured_distribution


def test_a_launcher_precision_that_the_run_overrides_is_warned_about(monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch` sets from a gpu-*.yaml
    with pytest.warns(UserWarning, match=r"asks for mixed_precision=bf16, the run config for no; using no"):
        accelerator = build_accelerator(mixed_precision="no")
    assert accelerator.mixed_precision == "no"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # agreeing (or no launcher at all) is silent
        assert build_accelerator(mixed_precision="bf16").mixed_precision == "bf16"
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
        build_accelerator(mixed_precision="no")


def test_the_zero_stage_of_a_deepspeed_config_file_is_the_one_expected(monkeypatch, tmp_path):
    # With `deepspeed_config_file:` in the accelerate config, `accelerate launch` exports the file's path but no
    # ACCELERATE_DEEPSPEED_ZERO_STAGE: assuming Accelerate's default (2) would fail a correct ZeRO-3 run.
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", raising=False)
    assert configured_distribution()["zero_stage"] == 2  # neither: Accelerate's DeepSpeedPlugin default
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": "auto"}))
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(config))
    assert configured_distribution() == {"distributed_type": "DEEPSPEED", "world_size": 2, "zero_stage": 3}
    config.write_text(json.dumps({"train_micro_batch_size_per_gpu": "auto"}))
    assert configured_distribution()["zero_stage"] == 0  # DeepSpeed's own default
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "1")  # `zero_stage:` in the accelerate config wins
    assert configured_distribution()["zero_stage"] == 1
    monkeypatch.delenv("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    config.write_text("{not json")
    with pytest.raises(ValueError, match="Cannot read the DeepSpeed config file.*fix deepspeed_config_file"):
        configured_distribution()
