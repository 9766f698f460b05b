"""Convert Meta's original LLaMA checkpoint to our Hugging Face format, load it and generate.

    python examples/convert_meta_checkpoint.py --input-dir /path/to/llama/7B --output-dir llama-7b-hf
    python examples/convert_meta_checkpoint.py        # no Meta files: a tiny random checkpoint is made first

Same as: llama-paper convert-meta --input-dir DIR --output-dir OUT [--dtype bfloat16]
"""

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import modeling_llama  # noqa: F401  (registers our classes with the Auto classes)
from modeling_llama.conversion.convert_meta import convert_meta_checkpoint

REPO = Path(__file__).resolve().parents[1]


def tiny_meta_checkpoint(folder: Path) -> Path:
    """A 2-layer random checkpoint in Meta's layout (2 model-parallel shards), with the real LLaMA tokenizer."""
    dim, hidden, vocab = 64, 192, 32000
    shapes = {
        "attention.wq": (dim, dim, 0),
        "attention.wk": (dim, dim, 0),
        "attention.wv": (dim, dim, 0),
        "attention.wo": (dim, dim, 1),
        "feed_forward.w1": (hidden, dim, 0),
        "feed_forward.w2": (dim, hidden, 1),
        "feed_forward.w3": (hidden, dim, 0),
    }
    full = {
        "tok_embeddings.weight": (torch.randn(vocab, dim), 1),
        "norm.weight": (torch.ones(dim), None),
        "output.weight": (torch.randn(vocab, dim) * 0.1, 0),
    }
    for i in range(2):
        full.update({f"layers.{i}.{k}.weight": (torch.randn(r, c) * 0.1, ax) for k, (r, c, ax) in shapes.items()})
        full.update({f"layers.{i}.{k}.weight": (torch.ones(dim), None) for k in ("attention_norm", "ffn_norm")})
    folder.mkdir(parents=True)
    for rank in range(2):
        shard = {k: t.clone() if ax is None else t.chunk(2, ax)[rank].clone() for k, (t, ax) in full.items()}
        torch.save(shard, folder / f"consolidated.{rank:02d}.pth")
    params = {"dim": dim, "multiple_of": 32, "n_heads": 4, "n_layers": 2, "norm_eps": 1e-6, "vocab_size": -1}
    (folder / "params.json").write_text(json.dumps(params))
    shutil.copyfile(REPO / "tests" / "fixtures" / "llama-tokenizer" / "tokenizer.model", folder / "tokenizer.model")
    return folder


parser = argparse.ArgumentParser()
parser.add_argument("--input-dir", help="Meta's folder (params.json, consolidated.NN.pth)")
parser.add_argument("--output-dir", help="where to write the converted model")
parser.add_argument("--dtype", default="keep", choices=["keep", "float32", "bfloat16", "float16"])
args = parser.parse_args()

scratch = Path(tempfile.mkdtemp())
input_dir = Path(args.input_dir) if args.input_dir else tiny_meta_checkpoint(scratch / "meta")
output_dir = Path(args.output_dir) if args.output_dir else scratch / "hf"
convert_meta_checkpoint(input_dir, output_dir, dtype=args.dtype)

tokenizer = AutoTokenizer.from_pretrained(output_dir)
model = AutoModelForCausalLM.from_pretrained(output_dir)
batch = tokenizer(["The capital of France is"], return_tensors="pt")
out = model.generate(**batch, max_new_tokens=8, do_sample=False)
print(type(model).__name__, type(tokenizer).__name__, "->", repr(tokenizer.decode(out[0], skip_special_tokens=True)))
if not args.output_dir:
    shutil.rmtree(scratch)
