"""Train a tokenizer the way the LLaMA paper did (§2.1): SentencePiece BPE, digits split, byte fallback.

Settings match Meta's released `tokenizer.model` (see tests/fixtures/llama-tokenizer/README.md): BPE,
`split_digits`, `byte_fallback`, identity normalization (no NFKC), whitespace runs kept and allowed as pieces,
`max_sentencepiece_length` 16, character coverage 0.99995, ids `<unk>`=0 `<s>`=1 `</s>`=2 and no pad.
Input is streamed line by line; at most `max_sentences` lines are kept by seeded reservoir sampling, so
the same input and seed give the same tokenizer. The output folder loads with our tokenizer classes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import sentencepiece as spm

from modeling_llama.tokenization_llama_paper_fast import LlamaPaperTokenizerFast

# The trainer_spec of Meta's LLaMA tokenizer (read from the released tokenizer.model).
PAPER_SETTINGS = dict(
    model_type="bpe",
    split_digits=True,
    byte_fallback=True,
    normalization_rule_name="identity",
    add_dummy_prefix=True,
    remove_extra_whitespaces=False,
    allow_whitespace_only_pieces=True,
    split_by_unicode_script=True,
    split_by_whitespace=True,
    split_by_number=True,
    max_sentencepiece_length=16,
    character_coverage=0.99995,
    max_sentence_length=4192,
    unk_id=0,
    bos_id=1,
    eos_id=2,
    pad_id=-1,
)
PROGRESS_EVERY = 1_000_000  # lines


def iter_texts(source, text_column: str = "text") -> Iterator[str]:
    """Texts from file paths (.txt as-is, .jsonl/.json lines by `text_column`), strings, or a `datasets.Dataset`.

    `Path` objects are always files. Plain strings are file names only in a list or tuple whose every item is an
    existing file (so `["a.txt", "b.jsonl"]` works); anything else, generators included, is text.
    """
    if hasattr(source, "column_names"):  # datasets.Dataset / IterableDataset
        # A streamed IterableDataset may not know its columns (column_names None) until rows are read.
        if source.column_names is not None and text_column not in source.column_names:
            raise ValueError(
                f"The dataset has no {text_column!r} column (columns: {source.column_names}); pass text_column=."
            )
        for row in source:
            if text_column not in row:
                raise ValueError(
                    f"The dataset has no {text_column!r} column (columns: {list(row)}); pass text_column=."
                )
            yield row[text_column]
        return
    if isinstance(source, (str, os.PathLike)):
        source = [Path(source)]
    elif isinstance(source, (list, tuple)) and source and all(_is_file_name(item) for item in source):
        source = [Path(item) for item in source]
    for item in source:
        if isinstance(item, os.PathLike):
            yield from _file_texts(Path(item), text_column)
        elif isinstance(item, str):
            yield item
        else:
            raise TypeError(
                f"Expected file paths or strings, got {type(item).__name__}: pass paths, texts or a Dataset."
            )


def _is_file_name(item) -> bool:
    return isinstance(item, os.PathLike) or (
        isinstance(item, str) and "\n" not in item and len(item) < 4096 and os.path.isfile(item)
    )


def _file_texts(path: Path, text_column: str) -> Iterator[str]:
    if not path.is_file():
        raise FileNotFoundError(f"Training file not found: {path}")
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        if path.suffix in (".jsonl", ".json"):
            for number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        yield json.loads(line)[text_column]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        raise ValueError(
                            f"{path}:{number} is not a JSON object with a {text_column!r} field."
                        ) from None
        else:
            yield from handle


def iter_sentences(texts: Iterable[str], max_bytes: int = PAPER_SETTINGS["max_sentence_length"]) -> Iterator[str]:
    """SentencePiece trains on lines: split texts at newlines, drop empty lines, cut overlong ones."""
    for text in texts:
        for line in text.split("\n"):
            line = line.rstrip("\r")
            if not line.strip():
                continue
            while len(line.encode("utf-8")) > max_bytes:
                line_bytes = line.encode("utf-8")[:max_bytes]
                head = line_bytes.decode("utf-8", errors="ignore")  # never cut inside a character
                yield head
                line = line[len(head) :]
            if line:
                yield line


def sample_sentences(sentences: Iterable[str], max_sentences: int, seed: int, progress: bool) -> list[str]:
    """At most `max_sentences` lines, uniformly sampled (reservoir sampling) with a fixed seed, in input order."""
    rng = random.Random(seed)
    reservoir: list[tuple[int, str]] = []
    seen = 0
    for seen, sentence in enumerate(sentences, 1):
        if len(reservoir) < max_sentences:
            reservoir.append((seen, sentence))
        else:
            slot = rng.randrange(seen)
            if slot < max_sentences:
                reservoir[slot] = (seen, sentence)
        if progress and seen % PROGRESS_EVERY == 0:
            print(f"train-tokenizer: read {seen:,} lines", file=sys.stderr, flush=True)
    if progress:
        print(f"train-tokenizer: {seen:,} lines read, {len(reservoir):,} used", file=sys.stderr, flush=True)
    return [sentence for _, sentence in sorted(reservoir)]


def train_tokenizer(
    files_or_dataset,
    vocab_size: int,
    output_dir: str | os.PathLike,
    seed: int = 0,
    max_sentences: int = 2_000_000,
    text_column: str = "text",
    num_threads: int = 1,
    progress: bool = True,
    overwrite: bool = False,
    **spm_options,
) -> Path:
    """Train the paper's SentencePiece BPE tokenizer and save a folder LlamaPaperTokenizer(Fast) load; returns it.

    `files_or_dataset`: file paths (.txt, .jsonl), an iterable of strings, or a `datasets.Dataset`.
    `spm_options` override `PAPER_SETTINGS` (e.g. `character_coverage=1.0` for a tiny corpus).
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{output_dir} is not empty; pass overwrite=True (--overwrite) or choose a new folder.")
    if vocab_size < 259 + 3:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: 3 special + 256 byte pieces come first; use at least 262."
        )
    sentences = sample_sentences(
        iter_sentences(iter_texts(files_or_dataset, text_column)), max_sentences, seed, progress
    )
    if not sentences:
        raise ValueError("No text to train on: the input is empty (or only blank lines).")
    settings = {**PAPER_SETTINGS, **spm_options}
    spm.set_random_generator_seed(seed)
    model = io.BytesIO()  # not model_prefix: the proto would record that (temporary) path and differ run to run
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            vocab_size=vocab_size,
            num_threads=num_threads,
            input_sentence_size=0,
            minloglevel=0 if progress else 2,
            **settings,
        )
    except RuntimeError as error:
        raise ValueError(f"SentencePiece could not train a {vocab_size}-piece tokenizer: {error}") from None
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output_dir.parent, prefix=f".{output_dir.name}.tmp-") as scratch:
        model_file = Path(scratch) / "tokenizer.model"
        model_file.write_bytes(model.getvalue())
        folder = Path(scratch) / "folder"
        LlamaPaperTokenizerFast(vocab_file=str(model_file)).save_pretrained(folder)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        folder.rename(output_dir)
    return output_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `llama-paper train-tokenizer`."""
    parser = subparsers.add_parser(
        "train-tokenizer",
        help="train a SentencePiece BPE tokenizer with the LLaMA paper's settings",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("inputs", nargs="+", help="text files (.txt) or JSON-lines files (.jsonl with a text field)")
    parser.add_argument("--vocab-size", type=int, default=32000, help="number of pieces (LLaMA: 32000)")
    parser.add_argument("--output-dir", required=True, help="folder to write (tokenizer.model, tokenizer.json, config)")
    parser.add_argument("--seed", type=int, default=0, help="sampling and trainer seed")
    parser.add_argument("--max-sentences", type=int, default=2_000_000, help="cap on training lines (reservoir sample)")
    parser.add_argument("--text-column", default="text", help="field holding the text in .jsonl files")
    parser.add_argument("--character-coverage", type=float, default=PAPER_SETTINGS["character_coverage"])
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output-dir")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    out = train_tokenizer(
        [Path(p) for p in args.inputs],
        args.vocab_size,
        args.output_dir,
        seed=args.seed,
        max_sentences=args.max_sentences,
        text_column=args.text_column,
        progress=not args.quiet,
        overwrite=args.overwrite,
        character_coverage=args.character_coverage,
    )
    print(f"train-tokenizer: wrote {out}")
    return 0
