"""Publish a model folder offline: push it to a local Hub with its card, load it back, export native and GGUF.

    python examples/publish_and_export.py                 # a freshly initialised "tiny" model
    python examples/publish_and_export.py --model DIR     # any folder from `llama-paper pretrain` / `convert-meta`

The Hub here is the project's own server on 127.0.0.1 (`publishing.local_hub`), so nothing leaves the machine; point
HF_ENDPOINT at the real Hub (and drop the local server) to publish for real with the same commands.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM, LlamaPaperTokenizerFast
from publishing.local_hub import HubServer

TOKENIZER = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "llama-tokenizer" / "tokenizer.model"
# Runs in a fresh interpreter: the endpoint is read once, at huggingface_hub's first import.
LOAD = """
import sys
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)
print(f"loaded {sys.argv[1]} from the local Hub as {type(model).__name__}; ids of 'Hello':", tokenizer("Hello").input_ids)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="A saved model folder; default: a new tiny model.")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llama-publish-"))
    folder = Path(args.model) if args.model else work / "tiny"
    if args.model is None:
        torch.manual_seed(0)
        LlamaPaperForCausalLM(LlamaPaperConfig.from_preset("tiny")).save_pretrained(folder)
        LlamaPaperTokenizerFast(vocab_file=str(TOKENIZER)).save_pretrained(folder)

    cli = [sys.executable, "-m", "modeling_llama.cli"]
    with HubServer(0, work / "hub") as hub:
        env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_TOKEN="hf_local")
        env.pop("HF_HUB_OFFLINE", None)
        subprocess.run(cli + ["push", "--model", str(folder), "--repo-id", "you/llama-tiny"], env=env, check=True)
        subprocess.run([sys.executable, "-c", LOAD, "you/llama-tiny"], env=env, check=True)
        print("received by the local Hub:", {k: v for k, v in hub.snapshot().items() if k != "commit_log"})
    subprocess.run(cli + ["export", "--format", "llama", "--model", str(folder), "--output", str(work / "native")],
                   check=True)
    subprocess.run(cli + ["export", "--format", "gguf", "--model", str(folder), "--output", str(work / "tiny.gguf")],
                   check=True)
    print(f"native folder (plain LlamaForCausalLM) and GGUF file in {work}")


if __name__ == "__main__":
    main()
