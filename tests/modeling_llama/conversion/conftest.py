"""Shared models for the conversion tests: a tiny random GQA model and a tiny model trained a few dozen steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM, LlamaPaperTokenizerFast

REPO = Path(__file__).resolve().parents[3]
TOKENIZER = REPO / "tests" / "fixtures" / "llama-tokenizer" / "tokenizer.model"
CORPUS = REPO / "training" / "corpus" / "tinyshakespeare.txt"
IDS = torch.tensor([[1, 450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203, 29889, 13, 29871, 30086]])


def save_model(model: LlamaPaperForCausalLM, folder: Path) -> Path:
    """The model and our tokenizer (real LLaMA tokenizer.model), as save_pretrained writes them."""
    model.save_pretrained(folder)
    LlamaPaperTokenizerFast(vocab_file=str(TOKENIZER)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def random_dir(tmp_path_factory) -> Path:
    """Tiny GQA model (4 heads, 2 KV heads) with every weight perturbed, so norms and heads are all non-trivial."""
    torch.manual_seed(0)
    model = LlamaPaperForCausalLM(LlamaPaperConfig.from_preset("tiny", num_key_value_heads=2, rope_theta=5e5))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return save_model(model, tmp_path_factory.mktemp("random") / "model")


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory) -> Path:
    """Tiny model trained 80 steps on 200 tokens of the shipped corpus: greedy tokens are varied and meaningful."""
    torch.manual_seed(0)
    tokenizer = LlamaPaperTokenizerFast(vocab_file=str(TOKENIZER))
    ids = torch.tensor(tokenizer(CORPUS.read_text()[:1000]).input_ids[:200])
    model = LlamaPaperForCausalLM(LlamaPaperConfig.from_preset("tiny", num_key_value_heads=2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: extra threads only contend
    try:
        for _ in range(80):
            starts = torch.randint(0, len(ids) - 33, (8,))
            batch = torch.stack([ids[s : s + 33] for s in starts])
            loss = model(batch, labels=batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    assert loss.item() < 3.0  # it learned the passage (uniform over 32000 pieces is 10.4)
    return save_model(model.eval(), tmp_path_factory.mktemp("trained") / "model")


def run_without_package(script: str, cwd: Path, timeout: int = 300) -> dict:
    """Run `script` in `python -I` outside the repository, with our package unimportable; its last line is JSON."""
    prologue = (
        "import sys, json\n"
        "sys.modules['modeling_llama'] = None  # the editable install's finder would find it otherwise\n"
        "try:\n    import modeling_llama\nexcept ImportError:\n    pass\nelse:\n    raise SystemExit('importable')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_MODULES_CACHE=str(cwd / "modules"),
               TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-I", "-c", prologue + script], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
