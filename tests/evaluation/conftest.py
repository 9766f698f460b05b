"""Shared fixtures: a tiny random LLaMA with the real LLaMA tokenizer, saved as a folder lm-eval can load."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
EVAL_DATA = FIXTURES / "eval"
TOKENIZER_MODEL = FIXTURES / "llama-tokenizer" / "tokenizer.model"


def build_tokenizer():
    """Our exact fast LLaMA tokenizer over the real `tokenizer.model` (BOS added, SentencePiece dummy prefix)."""
    from modeling_llama import LlamaPaperTokenizerFast

    return LlamaPaperTokenizerFast(vocab_file=str(TOKENIZER_MODEL))


def build_model(seed: int = 0, max_positions: int = 512):
    """A 2-layer, 64-wide LlamaPaperForCausalLM over the real 32000-token vocabulary, with weights large enough to
    be peaky (so that decisions are not ties)."""
    import torch

    from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM

    torch.manual_seed(seed)
    config = LlamaPaperConfig(vocab_size=32000, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                              num_attention_heads=4, max_position_embeddings=max_positions, initializer_range=0.2)
    return LlamaPaperForCausalLM(config).eval()


@pytest.fixture(scope="package", autouse=True)
def single_torch_thread():
    """One intra-op thread: on a small shared CPU, tiny models run many times faster without thread contention."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """Folder with config.json, model.safetensors and tokenizer.json."""
    out = tmp_path_factory.mktemp("tiny-llama")
    build_model().save_pretrained(out)
    build_tokenizer().save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def adapter(tiny_model_dir):
    """Our adapter over the saved tiny model (float32, CPU, no progress bars)."""
    from evaluation.model_adapter import CausalLMAdapter

    return CausalLMAdapter.from_pretrained(str(tiny_model_dir), device="cpu", batch_size=8, progress=False)
