"""Build (or load) a LLaMA, save it as a Hub-ready folder, load it back through the Auto classes, and generate.

    python examples/load_and_generate.py                  # a freshly initialised "tiny" model (random text)
    python examples/load_and_generate.py --model DIR      # any folder from `llama-paper pretrain` / `convert-meta`
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import modeling_llama  # noqa: F401  (registers LlamaPaper* with the Auto classes)
from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM, LlamaPaperTokenizerFast

TOKENIZER = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "llama-tokenizer" / "tokenizer.model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="A saved model folder; default: a new tiny model.")
    parser.add_argument("--prompt", default="The meaning of life is")
    args = parser.parse_args()

    folder = args.model
    if folder is None:
        folder = tempfile.mkdtemp(prefix="llama-tiny-")
        torch.manual_seed(0)
        LlamaPaperForCausalLM(LlamaPaperConfig.from_preset("tiny")).save_pretrained(folder)
        LlamaPaperTokenizerFast(vocab_file=str(TOKENIZER)).save_pretrained(folder)
        print(f"saved a random tiny model to {folder}")
    elif not (Path(folder) / "config.json").is_file():
        parser.error(f"--model {folder}: no saved model there (no config.json)")

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    # LLaMA has no pad token; <unk> (id 0) serves for a left-padded batch, and the attention mask makes it inert.
    tokenizer.pad_token = tokenizer.unk_token
    inputs = tokenizer([args.prompt, "Once upon a time"], return_tensors="pt", padding=True)
    out = model.generate(**inputs, max_new_tokens=20, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    for text in tokenizer.batch_decode(out, skip_special_tokens=True):
        print(repr(text))


if __name__ == "__main__":
    main()
