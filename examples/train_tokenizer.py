"""Train a LLaMA-style tokenizer (SentencePiece BPE, digits split, byte fallback) on the demo corpus.

    python examples/train_tokenizer.py [--vocab-size 4000] [--output-dir runs/tokenizer-demo]

Same as: llama-paper train-tokenizer training/corpus/*.txt --vocab-size 4000 --output-dir runs/tokenizer-demo
"""

import argparse
from pathlib import Path

from transformers import AutoTokenizer

import modeling_llama  # noqa: F401  (registers LlamaPaperTokenizerFast with AutoTokenizer)
from training.tokenizer import train_tokenizer

REPO = Path(__file__).resolve().parents[1]

parser = argparse.ArgumentParser()
parser.add_argument("--vocab-size", type=int, default=4000)
parser.add_argument("--output-dir", default=str(REPO / "runs" / "tokenizer-demo"))
args = parser.parse_args()

files = sorted((REPO / "training" / "corpus").glob("*.txt"))
out = train_tokenizer(files, args.vocab_size, args.output_dir, seed=0, overwrite=True, progress=False)
tokenizer = AutoTokenizer.from_pretrained(out)
text = "To be, or not to be: 1601 lines, and a llama 🦙."
ids = tokenizer(text).input_ids
print(f"saved to {out} ({type(tokenizer).__name__}, {len(tokenizer)} pieces)")
print(tokenizer.convert_ids_to_tokens(ids))
assert tokenizer.decode(ids, skip_special_tokens=True) == text  # byte fallback: nothing is lost
