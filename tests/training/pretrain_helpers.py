"""Shared pieces of the pre-training tests: one small tokenizer per session, tiny run configs, weight comparison."""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]


@functools.lru_cache(maxsize=1)
def tiny_tokenizer_dir() -> Path:
    """A 512-piece tokenizer trained once per test session on the shipped demo corpus."""
    from training.data import demo_mixture_path, load_mixture
    from training.tokenizer import train_tokenizer

    folder = Path(tempfile.mkdtemp(prefix="llama-paper-test-tok-")) / "tokenizer"
    texts = load_mixture(demo_mixture_path()).iter_texts(split="train")
    return Path(train_tokenizer(texts, vocab_size=512, output_dir=folder, seed=0))


def tiny_run(output_dir: Path, **overrides):
    """The `tiny` preset with the session tokenizer, no TensorBoard, 1 thread-friendly sizes."""
    from training.run_config import RunConfig

    values = {"tokenizer": str(tiny_tokenizer_dir()), "output_dir": str(output_dir), "tensorboard": False,
              "sample_tokens": 8, "eval_max_batches": 2, **overrides}
    return RunConfig.from_dict(values, base=RunConfig.from_preset("tiny"))


def final_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a saved (possibly sharded) Hugging Face folder."""
    weights = {}
    for shard in sorted(Path(folder).glob("*.safetensors")):
        weights.update(load_file(shard))
    assert weights, f"no safetensors in {folder}"
    return weights


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    """Same keys; tensors equal (bit-exact when atol == 0)."""
    assert a.keys() == b.keys()
    for key in a:
        if atol == 0.0:
            assert torch.equal(a[key], b[key]), f"{key} differs (max {(a[key] - b[key]).abs().max().item():.3g})"
        else:
            torch.testing.assert_close(a[key].float(), b[key].float(), atol=atol, rtol=0, msg=key)


def subprocess_env() -> dict[str, str]:
    """Environment for launched runs: offline, one thread per process, the repo's DeepSpeed op cache."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "TORCH_EXTENSIONS_DIR": str(REPO / ".torch_ext"), "DS_ACCELERATOR": "cpu",
                "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


def pretrain_command(*args: str) -> list[str]:
    """`python -m training.pretrain ARGS` with this interpreter."""
    return [sys.executable, "-m", "training.pretrain", *args]
