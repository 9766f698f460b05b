"""`llama-paper generate`: stream a continuation of a prompt from a saved model folder."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def load_model_and_tokenizer(model_dir: str | Path, dtype: str = "auto"):
    """Load any causal-LM folder (ours, transformers' Llama, ...) with its tokenizer, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from . import LlamaPaperConfig  # noqa: F401  (registers our classes with the Auto factories)

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"No model at {path}: expected a folder with config.json and *.safetensors, as written by "
            "`save_pretrained` or `llama-paper pretrain`/`convert-meta`."
        )
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


def generate_text(
    model,
    tokenizer,
    prompt: str,
    max_new_tokens: int = 64,
    temperature: float = 0.8,
    top_p: float = 0.95,
    seed: int = 0,
    streamer=None,
    compile: bool | None = None,
) -> str:
    """Sample (or decode greedily when temperature == 0) a continuation of `prompt`; returns the new text.

    LLaMA-family models decode through `decoding.generate_tokens` (static KV cache; the decode step compiled when
    `compile` is True, or with None once the process has decoded enough steps to repay it); others use generate().
    """
    from .decoding import Sampling, generate_tokens, supports_fast_decoding

    inputs = tokenizer(prompt, return_tensors="pt").to(model.device)
    prompt_ids = inputs["input_ids"]
    sampling = temperature > 0
    if supports_fast_decoding(model) and prompt_ids.shape[1] > 0:
        if streamer is not None:
            streamer.put(prompt_ids.cpu())
        eos = model.generation_config.eos_token_id
        (tokens,), = generate_tokens(
            model, prompt_ids.tolist(), max_new_tokens,
            Sampling(temperature=temperature, top_p=top_p if sampling else 1.0, seed=seed),
            eos_token_ids=tuple(eos) if isinstance(eos, (list, tuple)) else ((eos,) if eos is not None else ()),
            compile=compile,
            on_token=None if streamer is None else (lambda new: streamer.put(torch.tensor(new))),
        )
        if streamer is not None:
            streamer.end()
        return tokenizer.decode(tokens, skip_special_tokens=True)
    torch.manual_seed(seed)
    output = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=sampling,
        temperature=temperature if sampling else None,
        top_p=top_p if sampling else None,
        top_k=None,
        streamer=streamer,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def _run(args: argparse.Namespace) -> int:
    from transformers import TextStreamer

    model, tokenizer = load_model_and_tokenizer(args.model, args.dtype)
    print(args.prompt, end="", flush=True)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    generate_text(model, tokenizer, args.prompt, args.max_new_tokens, args.temperature, args.top_p, args.seed, streamer,
                  compile=args.compile)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `generate` subcommand."""
    p = subparsers.add_parser("generate", help="Stream text from a saved model folder.")
    p.add_argument("--model", required=True, help="Folder written by save_pretrained / pretrain / convert-meta.")
    p.add_argument("--prompt", default="", help="Text to continue (BOS is added by the tokenizer).")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy decoding.")
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the decode step (one graph, no per-layer Python): faster tokens "
                        "after a one-off compile of tens of seconds. Default: only for runs over 2048 new tokens.")
    p.set_defaults(func=_run)
