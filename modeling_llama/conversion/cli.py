"""`llama-paper export` (our folder -> transformers-native Llama folder or GGUF file) and `llama-paper import-hf`."""

from __future__ import annotations

import argparse

FORMATS = ("llama", "gguf")


def register_export(subparsers: argparse._SubParsersAction) -> None:
    """Add `llama-paper export --format llama|gguf --model DIR --output PATH`."""
    from .gguf import OUTTYPE_CHOICES

    parser = subparsers.add_parser(
        "export",
        help="export a model folder to a transformers-native Llama folder or a llama.cpp GGUF file",
        description="Export one of our model folders for runtimes that do not run our code: --format llama writes "
        "a folder transformers, vLLM, TGI, MLX and lm-eval load with no remote code; --format gguf writes a file for "
        "llama.cpp, ollama and LM Studio.",
    )
    parser.add_argument("--format", required=True, choices=FORMATS, help="llama (folder) or gguf (file)")
    parser.add_argument("--model", required=True, help="our model folder (saved by save_pretrained or a run)")
    parser.add_argument("--output", required=True, help="folder (llama) or FILE.gguf (gguf) to create")
    parser.add_argument(
        "--outtype", choices=list(OUTTYPE_CHOICES), default=None,
        help="GGUF tensor type of the weight matrices (norms stay f32); default auto, as llama.cpp's converter: "
        "the model's 16-bit type (bf16 stays bf16, its bytes copied unchanged; f32 becomes f16); --format gguf only",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    if args.format == "llama":
        if args.outtype is not None:
            raise ValueError("--outtype applies to --format gguf only; the llama format keeps the folder's dtype.")
        from .native import export_llama

        out = export_llama(args.model, args.output, overwrite=args.overwrite)
    else:
        from .gguf import export_gguf

        out = export_gguf(args.model, args.output, outtype=args.outtype or "auto", overwrite=args.overwrite)
    print(f"export: wrote {out}")
    return 0


def register_import(subparsers: argparse._SubParsersAction) -> None:
    """Add `llama-paper import-hf --input-dir FOLDER --output-dir OUT`."""
    parser = subparsers.add_parser(
        "import-hf",
        help="convert a transformers Llama folder (model_type llama) into one of our folders",
        description="Convert any LLaMA-architecture Hugging Face folder (model_type llama, safetensors) into a "
        "LlamaPaperForCausalLM folder with our tokenizers; features LLaMA lacks (RoPE scaling, biases) are refused.",
    )
    parser.add_argument("--input-dir", required=True, help="transformers Llama folder (config.json + safetensors)")
    parser.add_argument("--output-dir", required=True, help="folder to create")
    parser.add_argument("--tokenizer", default=None, help="tokenizer.model (default: the one in --input-dir)")
    parser.add_argument("--overwrite", action="store_true", help="replace a model already in --output-dir")
    parser.set_defaults(func=_import)


def _import(args: argparse.Namespace) -> int:
    from .native import import_llama

    out = import_llama(args.input_dir, args.output_dir, overwrite=args.overwrite, tokenizer=args.tokenizer)
    print(f"import-hf: wrote {out}")
    return 0
