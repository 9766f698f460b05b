"""`llama-paper info`: parameters, FLOPs per token and weight memory of a model folder or preset."""

from __future__ import annotations

import argparse
from pathlib import Path

from .configuration_llama_paper import PAPER_PARAMETERS, PRESETS, LlamaPaperConfig
from .flops import count_parameters, flops_per_token, memory_bytes


def describe(config: LlamaPaperConfig, seq_len: int | None = None) -> dict[str, float]:
    """The numbers `info` prints, as a dict (parameters, FLOPs/token, bytes per dtype)."""
    seq_len = seq_len or config.max_position_embeddings
    return {
        "parameters": count_parameters(config),
        "non_embedding_parameters": count_parameters(config, include_embeddings=False),
        "train_flops_per_token": flops_per_token(config, seq_len, training=True),
        "forward_flops_per_token": flops_per_token(config, seq_len, training=False),
        **{f"weights_bytes_{k}": v for k, v in memory_bytes(config).items()},
    }


def _run(args: argparse.Namespace) -> int:
    if (args.model is None) == (args.preset is None):
        raise SystemExit("llama-paper info: pass exactly one of --model DIR or --preset NAME.")
    if args.model is not None and not (Path(args.model) / "config.json").is_file():
        raise FileNotFoundError(f"--model {args.model}: no config.json there; pass a folder written by "
                                "`llama-paper pretrain`, `convert-meta` or `save_pretrained` (or use --preset NAME).")
    config = LlamaPaperConfig.from_preset(args.preset) if args.preset else LlamaPaperConfig.from_pretrained(args.model)
    seq = args.seq_len or config.max_position_embeddings
    info = describe(config, seq)
    print(f"layers {config.num_hidden_layers}, dim {config.hidden_size}, heads {config.num_attention_heads} "
          f"(kv {config.num_key_value_heads}), ffn {config.intermediate_size}, vocab {config.vocab_size}")
    print(f"parameters        {info['parameters']:,} ({info['parameters'] / 1e9:.2f}B)", end="")
    print(f"; paper: {PAPER_PARAMETERS[args.preset] / 1e9:.1f}B" if args.preset in PAPER_PARAMETERS else "")
    print(f"  without embeddings {info['non_embedding_parameters']:,}")
    print(f"FLOPs per token   {info['train_flops_per_token']:.3e} training, "
          f"{info['forward_flops_per_token']:.3e} forward (sequence length {seq})")
    for dtype in ("float32", "bfloat16", "float16"):
        print(f"weights {dtype:9s} {info[f'weights_bytes_{dtype}'] / 2**30:.2f} GiB")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `info` subcommand."""
    p = subparsers.add_parser("info", help="Parameters, FLOPs per token and memory of a model or preset.")
    p.add_argument("--model", help="A saved model folder.")
    p.add_argument("--preset", choices=list(PRESETS), help="A named configuration instead of a folder.")
    p.add_argument("--seq-len", type=int, help="Sequence length for the attention FLOPs (default: context length).")
    p.set_defaults(func=_run)
