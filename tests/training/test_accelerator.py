"""build_accelerator: the run config's precision wins over the launcher's, and a disagreement is said aloud."""

import warnings

import pytest

from training.accelerator import build_accelerator


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
