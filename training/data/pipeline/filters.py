"""Our datatrove filters for the paper's steps that datatrove has no block for (§2.1 of Touvron et al. 2023).

Every filter returns `(False, reason)` when it drops a document, so the exclusion writer records why.
"""

from __future__ import annotations

import re
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.dedup import SentenceDedupFilter
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.filters.language_filter import LanguageFilter
from datatrove.utils.lid import FT176LID

# The paper's GitHub subset: "we only kept projects that are distributed under the Apache, BSD and MIT licenses".
PERMISSIVE_LICENSES = frozenset({"MIT", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "0BSD", "BSD-3-Clause-Clear",
                                 "BSD-4-Clause", "ISC"})
# RedPajama's GitHub rows carry the repository licence as a BigQuery name ("mit", "apache-2.0", "bsd-3-clause").
_LICENSE_ALIASES = {"mit": "MIT", "apache-2.0": "Apache-2.0", "bsd-2-clause": "BSD-2-Clause",
                    "bsd-3-clause": "BSD-3-Clause", "0bsd": "0BSD", "isc": "ISC", "gpl-2.0": "GPL-2.0",
                    "gpl-3.0": "GPL-3.0", "lgpl-2.1": "LGPL-2.1", "lgpl-3.0": "LGPL-3.0", "agpl-3.0": "AGPL-3.0",
                    "mpl-2.0": "MPL-2.0", "unlicense": "Unlicense", "cc0-1.0": "CC0-1.0"}
_SPDX_HEADER = re.compile(r"SPDX-License-Identifier:\s*([\w.+-]+)")
_APACHE_NOTICE = re.compile(r"Licensed under the Apache License,? Version 2\.0")

# The 20 Wikipedia languages of the paper: bg, ca, cs, da, de, en, es, fr, hr, hu, it, nl, pl, pt, ro, ru, sl, sr,
# sv, uk (Latin or Cyrillic scripts).
WIKIPEDIA_LANGUAGES = ("bg", "ca", "cs", "da", "de", "en", "es", "fr", "hr", "hu", "it", "nl", "pl", "pt", "ro", "ru",
                       "sl", "sr", "sv", "uk")


def license_of_text(text: str) -> str | None:
    """The SPDX id of a licence text (choosealicense.com's 35 texts, 5% edit distance), or of an SPDX/Apache header."""
    import tempfile

    from identify.identify import license_id

    header = _SPDX_HEADER.search(text)
    if header:
        return header.group(1)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        found = license_id(handle.name)
    if found is None and _APACHE_NOTICE.search(text):
        return "Apache-2.0"
    return found


class LicenseFilter(BaseFilter):
    """Keep code whose repository licence is on a permissive keep-list (paper: Apache, BSD, MIT).

    The licence is read, in this order, from `metadata["license"]` (an SPDX id or a GitHub/BigQuery licence name,
    as in RedPajama), from `metadata["license_text"]` (the repository's LICENSE file, detected by text), or from an
    SPDX header in the file itself. Unknown licence: dropped (reason `license_unknown`)."""

    name = "📜 Licence keep-list"

    def __init__(self, keep: frozenset[str] | list[str] = PERMISSIVE_LICENSES, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.keep = frozenset(keep)

    def license(self, doc: Document) -> str | None:
        """The document's SPDX licence id, or None."""
        declared = doc.metadata.get("license")
        if isinstance(declared, str) and declared:
            return _LICENSE_ALIASES.get(declared.lower(), declared)
        text = doc.metadata.get("license_text")
        if isinstance(text, str) and text.strip():
            return license_of_text(text)
        header = _SPDX_HEADER.search(doc.text[:4096])
        return header.group(1) if header else None

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        spdx = self.license(doc)
        doc.metadata["license"] = spdx
        if spdx is None:
            return False, "license_unknown"
        return (True if spdx in self.keep else (False, "license_not_permissive"))


class GithubHeuristicsFilter(BaseFilter):
    """RedPajama's GitHub heuristics (the closest public analogue of the paper's "line length or proportion of
    alphanumeric characters"): drop files with a line over 1000 characters, mean line length over 100, or under 25%
    alphanumeric characters."""

    name = "🐙 GitHub heuristics"

    def __init__(self, max_line_length: int = 1000, max_mean_line_length: float = 100.0, min_alnum: float = 0.25,
                 exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.max_line_length, self.max_mean_line_length, self.min_alnum = (max_line_length, max_mean_line_length,
                                                                           min_alnum)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        lines = doc.text.splitlines() or [""]
        if max(map(len, lines)) > self.max_line_length:
            return False, "max_line_length"
        if sum(map(len, lines)) / len(lines) > self.max_mean_line_length:
            return False, "mean_line_length"
        if sum(c.isalnum() for c in doc.text) / max(1, len(doc.text)) < self.min_alnum:
            return False, "alnum_fraction"
        return True


class LocalLanguageFilter(LanguageFilter):
    """datatrove's fastText `LanguageFilter` on a local model file (CCNet's lid.176.bin or its quantised .ftz):
    nothing is downloaded. Drops with reason `language`."""

    name = "🌍 Language ID (local fastText)"

    def __init__(self, model_path: str | Path, languages: list[str] | tuple[str, ...] = ("en",),
                 language_threshold: float = 0.65, exclusion_writer=None):
        super().__init__(languages=list(languages), language_threshold=language_threshold,
                         exclusion_writer=exclusion_writer)
        model_path = Path(model_path)
        if not model_path.is_file():
            raise FileNotFoundError(f"Language-ID model {model_path} not found: give models.language_id in the data "
                                    "config (fastText lid.176.bin, or the 0.9 MB lid.176.ftz shipped in "
                                    "tests/fixtures/data-pipeline/models).")
        # A class per model file: datatrove caches the copied model under its URL, so the path keys the cache.
        self.model = type("LocalFT176LID", (FT176LID,), {"MODEL_URL": str(model_path.resolve()),
                                                         "MODEL_SUBFOLDER": "ft176-local"})(list(languages))

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return True if super().filter(doc) else (False, "language")


class MetadataLanguageFilter(BaseFilter):
    """Keep documents whose `metadata["language"]` is in a list (Wikipedia: the dumps of the paper's 20 languages)."""

    name = "🌐 Language keep-list"

    def __init__(self, languages: tuple[str, ...] = WIKIPEDIA_LANGUAGES, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.languages = frozenset(languages)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return True if doc.metadata.get("language") in self.languages else (False, "language_not_in_list")


_NON_WORD = re.compile(r"[^\w\s]")
_DIGIT = re.compile(r"\d")


def ccnet_normalize(line: str) -> str:
    """CCNet's normalisation before the n-gram model: lower case, punctuation removed, digits -> 0."""
    return " ".join(_DIGIT.sub("0", _NON_WORD.sub(" ", line.lower())).split())


def ngram_tokenizer_path(model_path: str | Path) -> Path:
    """The SentencePiece model an n-gram model's pieces come from, kept beside it: `cc-v1.arpa` (or `.arpa.bin`,
    `.bin`) -> `cc-v1.sp.model` (CCNet's layout: `en.arpa.bin` + `en.sp.model`)."""
    model_path = Path(model_path)
    name = model_path.name
    for suffix in (".bin", ".arpa"):
        name = name[: -len(suffix)] if name.endswith(suffix) else name
    return model_path.parent / f"{name}.sp.model"


def ngram_pieces(sp, line: str) -> str:
    """A line as the n-gram model sees it (CCNet): normalised, then SentencePiece pieces joined by spaces."""
    return " ".join(sp.encode(ccnet_normalize(line), out_type=str))


class PerplexityFilter(BaseFilter):
    """CCNet's n-gram language-model filter on a local KenLM model (`.arpa` or binary) over SentencePiece pieces
    (CCNet tokenises with a SentencePiece model before KenLM; ours is the one `llama-paper train-ngram` trained the
    model with, kept beside it as `<name>.sp.model`): drop documents whose perplexity, 10 ** (-sum log10 p / (pieces
    + one </s> per line)) over normalised lines, exceeds `max_perplexity` (reason `perplexity`), kept in
    `metadata["perplexity"]`. (CCNet buckets by percentile; the paper says only "an n-gram language model".)"""

    name = "📉 KenLM perplexity"

    def __init__(self, model_path: str | Path, max_perplexity: float, exclusion_writer=None):
        super().__init__(exclusion_writer)
        if not Path(model_path).is_file():
            raise FileNotFoundError(f"n-gram model {model_path} not found: train one with `llama-paper train-ngram` "
                                    "or give a KenLM .arpa/.bin as models.ngram in the data config.")
        tokenizer = ngram_tokenizer_path(model_path)
        if not tokenizer.is_file():
            raise FileNotFoundError(f"n-gram model {model_path} has no SentencePiece model beside it ({tokenizer}): "
                                    "the model scores pieces of the tokenizer it was trained with. Retrain it with "
                                    "`llama-paper train-ngram --tokenizer ...` (which writes both), or copy that "
                                    f"tokenizer.model to {tokenizer}.")
        try:
            import kenlm  # noqa: F401  (ufal-kenlm's wheel installs the `kenlm` module)
        except ImportError as error:
            raise ImportError("The n-gram filter needs KenLM: pip install ufal-kenlm (or llama-paper[data]).") from error
        self.model_path, self.tokenizer_path = str(model_path), str(tokenizer)
        self.max_perplexity = float(max_perplexity)
        self._model = self._sp = None

    def perplexity(self, text: str) -> float:
        """The document's CCNet-style perplexity under the model, per SentencePiece piece."""
        if self._model is None:
            import kenlm
            import sentencepiece as spm
            self._model = kenlm.Model(self.model_path)
            self._sp = spm.SentencePieceProcessor(model_file=self.tokenizer_path)
        log10, tokens = 0.0, 0
        for line in text.splitlines():
            pieces = ngram_pieces(self._sp, line)
            if pieces:
                log10 += self._model.score(pieces, bos=True, eos=True)
                tokens += pieces.count(" ") + 2  # pieces + </s>
        return 10 ** (-log10 / tokens) if tokens else float("inf")

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        ppl = self.perplexity(doc.text)
        doc.metadata["perplexity"] = round(ppl, 2)
        return True if ppl <= self.max_perplexity else (False, "perplexity")


class NonEmptyFilter(BaseFilter):
    """Drop documents left empty (or shorter than `min_chars`) by an earlier step, e.g. line dedup."""

    name = "🫙 Non-empty"

    def __init__(self, min_chars: int = 1, reason: str = "empty", exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.min_chars, self.reason = min_chars, reason

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return True if len(doc.text.strip()) >= self.min_chars else (False, self.reason)


class WikirefClassifierFilter(BaseFilter):
    """The paper's "linear model ... to classify pages used as references in Wikipedia v.s. randomly sampled pages",
    a fastText model from `llama-paper train-quality-classifier`; keeps P(wikiref) >= threshold (reason
    `not_wikiref`). Loaded directly from the local file (no asset cache: a retrained model is never served stale)."""

    name = "📚 Wikipedia-reference classifier"
    _requires_dependencies = [("fasttext", "fasttext-numpy2-wheel")]

    def __init__(self, model_path: str | Path, threshold: float = 0.5, exclusion_writer=None):
        super().__init__(exclusion_writer)
        if not Path(model_path).is_file():
            raise FileNotFoundError(f"Quality classifier {model_path} not found: train one with "
                                    "`llama-paper train-quality-classifier` (models.wikiref_classifier).")
        self.model_path, self.threshold = str(model_path), float(threshold)
        self._model = None

    def score(self, text: str) -> float:
        """P(wikiref) of a text."""
        if self._model is None:
            from fasttext.FastText import _FastText
            self._model = _FastText(self.model_path)
        labels, probs = self._model.predict(text.replace("\n", " "), k=-1)
        return float(dict(zip(labels, probs)).get("__label__wikiref", 0.0))

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        score = self.score(doc.text)
        doc.metadata["wikiref_score"] = round(score, 4)
        return True if score >= self.threshold else (False, "not_wikiref")


_LATEX_SECTION = re.compile(r"\\(part|chapter|section|subsection)\*?\s*[{\[]")


class LatexSectionFilter(BaseFilter):
    """ArXiv: the paper keeps the text from the first section on; a file without any section has no body to keep
    (reason `no_section`), as in RedPajama's arXiv cleaning."""

    name = "📄 Has a section"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return True if _LATEX_SECTION.search(doc.text) else (False, "no_section")


class LineDedupFilter(SentenceDedupFilter):
    """datatrove's sentence-dedup filter with one line as one "sentence" (CCNet). A document all of whose lines were
    seen before is passed on as blank instead of silently vanishing, so `NonEmptyFilter` drops it with a reason;
    the exclusion writer receives the edited documents with their removed lines marked."""

    def remove_dup_sentences(self, doc: Document, du_lines) -> tuple[str, str]:
        text, original = super().remove_dup_sentences(doc, du_lines)
        return text or " ", original
