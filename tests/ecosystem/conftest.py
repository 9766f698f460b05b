"""A tiny-preset model saved by our classes (weights, both tokenizers, remote-code sources) for the ecosystem tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

TOKENIZER_MODEL = Path(__file__).resolve().parents[1] / "fixtures" / "llama-tokenizer" / "tokenizer.model"


@pytest.fixture(scope="package", autouse=True)
def single_torch_thread():
    """One intra-op thread: tiny models on a small shared CPU run faster without thread contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """`save_pretrained` of a random tiny LlamaPaperForCausalLM (GQA, peaky weights) and LlamaPaperTokenizerFast."""
    from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM, LlamaPaperTokenizerFast

    torch.manual_seed(0)
    config = LlamaPaperConfig.from_preset("tiny", num_key_value_heads=2, initializer_range=0.2)
    folder = tmp_path_factory.mktemp("tiny-ours")
    LlamaPaperForCausalLM(config).eval().save_pretrained(folder)
    LlamaPaperTokenizerFast(vocab_file=str(TOKENIZER_MODEL)).save_pretrained(folder)
    return folder
