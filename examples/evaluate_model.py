"""Evaluate a causal LM on the paper's commonsense benchmarks under both protocols, side by side.

    python examples/evaluate_model.py --model path/to/llama-7b-hf --data-dir tests/fixtures/eval --limit 50

Without --model, a tiny random LLaMA is built so the example runs anywhere in seconds (its scores are chance-level).
The same thing from the command line:

    llama-paper eval --model DIR --tasks commonsense --protocol paper --data-dir DIR --output results.json
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from evaluation.model_adapter import CausalLMAdapter
from evaluation.paper_results import comparison_table
from evaluation.runner import evaluate

ROOT = Path(__file__).resolve().parents[1]


def tiny_model(folder: Path) -> str:
    """Save a 2-layer random LLaMA with the real tokenizer into `folder`."""
    import torch

    from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM, LlamaPaperTokenizerFast

    torch.manual_seed(0)
    LlamaPaperForCausalLM(LlamaPaperConfig.from_preset("tiny", vocab_size=32000)).save_pretrained(folder)
    tokenizer_model = ROOT / "tests" / "fixtures" / "llama-tokenizer" / "tokenizer.model"
    LlamaPaperTokenizerFast(vocab_file=str(tokenizer_model)).save_pretrained(folder)
    return str(folder)


def main() -> None:
    """Run both protocols and print the comparison tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: a tiny random model)")
    parser.add_argument("--tasks", default="commonsense")
    parser.add_argument("--data-dir", default=str(ROOT / "tests" / "fixtures" / "eval"))
    parser.add_argument("--limit", type=int, default=20)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or tiny_model(Path(tmp))
        adapter = CausalLMAdapter.from_pretrained(model)
        for protocol in ("harness", "paper"):
            report, _ = evaluate(adapter, args.tasks, protocol, limit=args.limit, data_dir=args.data_dir)
            print(f"\n## {protocol} protocol ({report['wall_time_s']:.1f} s)\n")
            print(comparison_table(report["results"]))


if __name__ == "__main__":
    main()
