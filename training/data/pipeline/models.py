"""Building the local models of the CommonCrawl pipeline from given text (`llama-paper train-quality-classifier`,
`llama-paper train-ngram`).

- The paper's "linear model to classify pages used as references in Wikipedia v.s. randomly sampled pages": a
  fastText supervised model over `__label__wikiref` / `__label__random` lines.
- CCNet's n-gram model: a Kneser-Ney ARPA file over SentencePiece pieces (as CCNet), written by `arpabo` (pure
  Python; fine for small corpora and tests), read by KenLM; the tokenizer is copied beside it (`<name>.sp.model`) so
  that scoring uses the same pieces. For web-scale models run KenLM's `lmplz` (C++/Boost) on text tokenised the same
  way (`ngram_pieces`) and put the tokenizer beside its .arpa/.bin.
"""

from __future__ import annotations

import io
import json
import random
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .filters import ngram_pieces, ngram_tokenizer_path

# Run by train_quality_classifier in a child process: argv = input file, output file, JSON of fastText's arguments.
# fastText's SGD occasionally diverges ("Encountered NaN") on tiny corpora: retry with a halved learning rate.
_TRAIN_FASTTEXT = """
import json, sys
import fasttext
params, lr = json.loads(sys.argv[3]), 0.1
for attempt in range(4):
    try:
        model = fasttext.train_supervised(sys.argv[1], lr=lr, **params)
        break
    except RuntimeError as error:
        if "NaN" not in str(error) or attempt == 3:
            raise
        lr /= 2
model.save_model(sys.argv[2])
"""

UNK_LOG10 = -7.0  # <unk>'s log10 probability: arpabo writes none, and KenLM's default (-100) would swamp scores


def _flat(text: str) -> str:
    return " ".join(text.split())


def train_quality_classifier(positive: Iterable[str], negative: Iterable[str], output: str | Path, epoch: int = 25,
                             bucket: int = 2_000_000,
                             dim: int = 32, word_ngrams: int = 2, seed: int = 0) -> Path:
    """Train the wikiref-vs-random fastText classifier on documents; returns the saved model file."""
    import fasttext  # noqa: F401  (missing: a clear ImportError here rather than in the child)

    lines = [f"__label__wikiref {_flat(t)}" for t in positive if t.strip()]
    lines += [f"__label__random {_flat(t)}" for t in negative if t.strip()]
    if not lines:
        raise ValueError("train-quality-classifier needs positive (Wikipedia-reference) and negative (random) texts.")
    random.Random(seed).shuffle(lines)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
        handle.flush()
        # In its own process: fastText's SGD ended in "Encountered NaN" at every learning rate when it ran inside a
        # process that had already run much other native code (the test suite, on a fresh machine), never in a fresh
        # one. One thread and a fixed seed: the same texts give the same model file.
        params = {"epoch": epoch, "dim": dim, "wordNgrams": word_ngrams, "thread": 1, "bucket": bucket, "seed": seed,
                  "verbose": 0}
        result = subprocess.run([sys.executable, "-c", _TRAIN_FASTTEXT, handle.name, str(output), json.dumps(params)],
                                capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"train-quality-classifier: fastText training failed: {result.stderr.strip()[-2000:]}")
    return output


def train_ngram(texts: Iterable[str], output: str | Path, tokenizer: str | Path, order: int = 3) -> Path:
    """Train a Kneser-Ney n-gram model on the SentencePiece pieces of CCNet-normalised lines; write an ARPA file
    KenLM loads, and the tokenizer beside it (`ngram_tokenizer_path`) for the filter to score with."""
    import shutil

    import sentencepiece as spm
    from arpabo import ArpaBoLM

    from .tokenize import resolve_sentencepiece

    sp_model = resolve_sentencepiece(tokenizer)
    sp = spm.SentencePieceProcessor(model_file=sp_model)
    corpus = "\n".join(pieces for text in texts for pieces in (ngram_pieces(sp, line) for line in text.splitlines())
                       if pieces)
    if not corpus:
        raise ValueError("train-ngram needs some text.")
    lm = ArpaBoLM(max_order=order, smoothing_method="kneser_ney")
    lm.read_corpus(io.StringIO(corpus + "\n"))
    lm.compute()
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "lm.arpa"
        lm.write_file(str(raw))
        arpa = to_kenlm_arpa(raw.read_text(encoding="utf-8"))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(arpa, encoding="utf-8")
    shutil.copyfile(sp_model, ngram_tokenizer_path(output))
    return output


def to_kenlm_arpa(text: str) -> str:
    """arpabo's output in the strict ARPA layout KenLM reads: from `\\data\\` on, tab-separated fields, `<unk>`."""
    text = text[text.index("\\data\\"):]
    out, section = [], 0
    for line in text.splitlines():
        header = re.match(r"\\(\d+)-grams:", line)
        count = re.match(r"ngram 1=(\d+)", line)
        if count:
            out.append(f"ngram 1={int(count.group(1)) + 1}")
            continue
        if header:
            section = int(header.group(1))
            out.append(line)
            if section == 1:
                out.append(f"{UNK_LOG10}\t<unk>\t0")
            continue
        fields = line.split()
        if section and fields and re.match(r"^-?\d", fields[0]):
            prob, rest = fields[0], fields[1:]
            words, backoff = (rest[:section], rest[section:])
            out.append("\t".join([prob, " ".join(words), *backoff]))
        else:
            out.append(line)
    return "\n".join(out) + "\n"
