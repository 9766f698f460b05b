"""One datatrove pipeline per source of the paper (§2.1, Table 1), as a chain of stages.

A stage is a list of datatrove steps run as `tasks` parallel tasks (files are sharded across tasks); dedup needs
several stages (signatures, then finding duplicates, then filtering), chained with `depends`. Every dropped document
goes to OUT/excluded/<source>/<step>/ with `metadata.filter_reason`; the kept documents to OUT/docs/<source>/.

| kind          | paper step                                                            | blocks                            |
|---------------|-----------------------------------------------------------------------|-----------------------------------|
| commoncrawl   | CCNet: line dedup, fastText LID, n-gram LM, Wikipedia-reference model | datatrove SentenceDedup, ours     |
| c4            | line dedup, language ID, C4 heuristics                                 | SentenceDedup, C4QualityFilter    |
| github        | Apache/BSD/MIT keep-list, line/alphanumeric heuristics, file dedup    | ours, ExactDedup                  |
| wikipedia     | 20 languages, links/comments/boilerplate removed                       | ours                              |
| books         | Gutenberg boilerplate, book dedup at >90% overlap                      | ours, MinhashDedup                |
| arxiv         | before first section, bibliography, comments removed; macros expanded | ours (latex cleaner)              |
| stackexchange | HTML removed, answers sorted by score                                 | ours                              |
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

from .config import DataConfig, SourceSpec


@dataclass
class Stage:
    """One datatrove executor's worth of work: `pipeline` run as `tasks` tasks."""

    name: str
    pipeline: list
    tasks: int


class Layout:
    """Where one source's outputs go under OUT."""

    def __init__(self, output_dir: str | Path, source: str):
        self.root, self.source = Path(output_dir), source

    def docs(self) -> str:
        return str(self.root / "docs" / self.source)

    def excluded(self, step: str) -> str:
        return str(self.root / "excluded" / self.source / step)

    def work(self, part: str) -> str:
        return str(self.root / "work" / self.source / part)

    def logs(self, stage: str) -> str:
        return str(self.root / "logs" / self.source / stage)

    def tokens(self) -> str:
        return str(self.root / "tokens" / self.source)


def redpajama_adapter(self, data: dict, path: str, id_in_file: int | str) -> dict:
    """JSONL record -> Document fields; RedPajama's `meta` mapping (licence, language, url...) joins the metadata."""
    text = data.pop(self.text_key, "")
    doc_id = data.pop(self.id_key, None) or f"{path}/{id_in_file}"
    meta = data.pop("meta", None)
    written = data.pop("metadata", None)  # our own intermediate files (JsonlWriter's layout)
    metadata = {**(meta if isinstance(meta, dict) else {}), **(written if isinstance(written, dict) else {}), **data}
    return {"text": text, "id": doc_id, "metadata": metadata}


def input_reader(source: SourceSpec) -> JsonlReader:
    """The source's raw JSONL files, in sorted order (task r reads files r, r+N, ...)."""
    return JsonlReader(source.path, glob_pattern=source.glob, text_key=source.text_key, adapter=redpajama_adapter,
                       compression="infer")


def work_reader(folder: str) -> JsonlReader:
    """An intermediate folder written by a previous stage (one file per task)."""
    return JsonlReader(folder, glob_pattern="*.jsonl.gz", adapter=redpajama_adapter)


def writer(folder: str) -> JsonlWriter:
    """Task r writes r.jsonl.gz: the next stage with the same task count reads back exactly its own file."""
    return JsonlWriter(folder, output_filename="${rank}.jsonl.gz")


# Not dropped documents: the documents line dedup edited, with the removed lines marked (datatrove's format).
EDITS_FOLDER = "removed_lines"


def _excl(layout: Layout, step: str) -> JsonlWriter:
    return writer(layout.excluded(step))


def document_text(doc) -> str:
    """The exact-dedup key: the whole file, byte for byte (no normalisation)."""
    return doc.text


# --- dedup stage chains --------------------------------------------------------------------------------------------
def line_dedup_stages(layout: Layout, reader_factory: Callable, tail: list, tasks: int) -> list[Stage]:
    """CCNet's line-level dedup: a line seen in an earlier document is removed (one "sentence" = one line)."""
    from datatrove.pipeline.dedup import SentenceDedupSignature, SentenceFindDedups
    from datatrove.pipeline.dedup.sentence_dedup import SentDedupConfig

    from .filters import LineDedupFilter

    config = SentDedupConfig(n_sentences=1, split_sentences=False, only_dedup_in_index=False, min_doc_words=0,
                             min_num_sentences=0)
    sigs, dups = layout.work("line_sigs"), layout.work("line_dups")
    return [Stage("line_dedup_signatures", [reader_factory(), SentenceDedupSignature(sigs, config=config,
                                                                                    finder_workers=1)], tasks),
            Stage("line_dedup_find", [SentenceFindDedups(sigs, dups, config=config)], 1),
            Stage("filter", [reader_factory(), LineDedupFilter(dups, config=config,
                                                               exclusion_writer=_excl(layout, EDITS_FOLDER)),
                             *tail], tasks)]


def exact_dedup_stages(layout: Layout, folder: str, tasks: int) -> list[Stage]:
    """GitHub: file-level exact dedup (digits kept: code differing only in numbers is not a duplicate)."""
    from datatrove.pipeline.dedup import ExactDedupFilter, ExactDedupSignature, ExactFindDedups
    from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig

    config = ExactDedupConfig(content_getter=document_text)
    sigs, dups = layout.work("exact_sigs"), layout.work("exact_dups")
    return [Stage("exact_dedup_signatures", [work_reader(folder), ExactDedupSignature(sigs, config=config,
                                                                                      finder_workers=1)], tasks),
            Stage("exact_dedup_find", [ExactFindDedups(sigs, dups, config=config)], 1),
            Stage("exact_dedup_filter", [work_reader(folder), ExactDedupFilter(
                dups, config=config, exclusion_writer=_excl(layout, "file_dedup")), writer(layout.docs())], tasks)]


def minhash_config(options: dict[str, Any]):
    """Books: b=20 bands of r=13 hashes puts the Jaccard threshold at (1/20)^(1/13) ~ 0.79, i.e. about the paper's
    ">90% content overlap" between books of similar length (0.9/1.1 ~ 0.82); 70% overlap (J ~ 0.54) is kept."""
    from datatrove.pipeline.dedup import MinhashConfig
    from datatrove.utils.hashing import HashConfig

    return MinhashConfig(n_grams=int(options.get("n_grams", 5)), num_buckets=int(options.get("num_buckets", 20)),
                         hashes_per_bucket=int(options.get("hashes_per_bucket", 13)),
                         hash_config=HashConfig(precision=64))


def minhash_stages(layout: Layout, folder: str, tasks: int, options: dict[str, Any]) -> list[Stage]:
    """Book-level near-dedup with datatrove's MinHash (signatures -> buckets -> clusters -> filter)."""
    from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                          MinhashDedupSignature)

    config = minhash_config(options)
    sigs, buckets, remove = layout.work("mh_sigs"), layout.work("mh_buckets"), layout.work("mh_remove")
    return [Stage("minhash_signatures", [work_reader(folder), MinhashDedupSignature(sigs, config=config)], tasks),
            Stage("minhash_buckets", [MinhashDedupBuckets(sigs, buckets, config=config)], config.num_buckets),
            Stage("minhash_cluster", [MinhashDedupCluster(buckets, remove, config=config)], 1),
            Stage("minhash_filter", [work_reader(folder), MinhashDedupFilter(
                remove, exclusion_writer=_excl(layout, "book_dedup")), writer(layout.docs())], tasks)]


# --- the seven sources ---------------------------------------------------------------------------------------------
def commoncrawl(source: SourceSpec, config: DataConfig, layout: Layout, tasks: int) -> list[Stage]:
    """CCNet: line dedup, then fastText language ID (English), the n-gram perplexity filter, the wikiref model."""
    from .filters import LocalLanguageFilter, NonEmptyFilter, PerplexityFilter, WikirefClassifierFilter

    o = source.options
    tail = [NonEmptyFilter(int(o.get("min_chars", 1)), "empty_after_line_dedup", _excl(layout, "empty")),
            LocalLanguageFilter(config.model("language_id"), o.get("languages", ["en"]),
                                float(o.get("language_threshold", 0.65)), _excl(layout, "language_id")),
            PerplexityFilter(config.model("ngram"), float(o.get("max_perplexity", 1000.0)),
                             _excl(layout, "ngram_perplexity"))]
    if o.get("wikiref_classifier", True):
        tail.append(WikirefClassifierFilter(config.model("wikiref_classifier"), float(o.get("wikiref_threshold", 0.5)),
                                            _excl(layout, "wikiref_classifier")))
    return line_dedup_stages(layout, lambda: input_reader(source), [*tail, writer(layout.docs())], tasks)


def c4(source: SourceSpec, config: DataConfig, layout: Layout, tasks: int) -> list[Stage]:
    """C4: line dedup, language ID, then C4's heuristics (punctuation, words and sentences per line, ...)."""
    from datatrove.pipeline.filters import C4QualityFilter

    from .filters import LocalLanguageFilter, NonEmptyFilter

    o = source.options
    tail = [NonEmptyFilter(1, "empty_after_line_dedup", _excl(layout, "empty")),
            C4QualityFilter(filter_no_terminal_punct=bool(o.get("filter_no_terminal_punct", True)),
                            exclusion_writer=_excl(layout, "c4_heuristics")),
            LocalLanguageFilter(config.model("language_id"), o.get("languages", ["en"]),
                                float(o.get("language_threshold", 0.65)), _excl(layout, "language_id")),
            writer(layout.docs())]
    return line_dedup_stages(layout, lambda: input_reader(source), tail, tasks)


def github(source: SourceSpec, config: DataConfig, layout: Layout, tasks: int) -> list[Stage]:
    """GitHub: licence keep-list and heuristics, then file-level exact dedup."""
    from .filters import PERMISSIVE_LICENSES, GithubHeuristicsFilter, LicenseFilter

    o = source.options
    filtered = layout.work("filtered")
    first = Stage("filter", [input_reader(source),
                             LicenseFilter(o.get("licenses", PERMISSIVE_LICENSES), _excl(layout, "license")),
                             GithubHeuristicsFilter(int(o.get("max_line_length", 1000)),
                                                    float(o.get("max_mean_line_length", 100)),
                                                    float(o.get("min_alnum", 0.25)), _excl(layout, "heuristics")),
                             writer(filtered)], tasks)
    return [first, *exact_dedup_stages(layout, filtered, tasks)]


def wikipedia(source: SourceSpec, config: DataConfig, layout: Layout, tasks: int) -> list[Stage]:
    """Wikipedia: the paper's 20 languages, then wikitext markup and boilerplate removed."""
    from .filters import WIKIPEDIA_LANGUAGES, MetadataLanguageFilter, NonEmptyFilter
    from .formatters import WikipediaFormatter

    languages = tuple(source.options.get("languages", WIKIPEDIA_LANGUAGES))
    return [Stage("filter", [input_reader(source), MetadataLanguageFilter(languages, _excl(layout, "language")),
                             WikipediaFormatter(), NonEmptyFilter(1, "empty", _excl(layout, "empty")),
                             writer(layout.docs())], tasks)]


def books(source: SourceSpec, config: DataConfig, layout: Layout, tasks: int) -> list[Stage]:
    """Books: Gutenberg header/footer removed, then near-duplicate books (>90% overlap) removed with MinHash."""
    from .filters import NonEmptyFilter
    from .formatters import CleanerFormatter

    filtered = layout.work("filtered")
    first = Stage("filter", [input_reader(source), CleanerFormatter(["gutenberg"]),
                             NonEmptyFilter(1, "empty", _excl(layout, "empty")), writer(filtered)], tasks)
    return [first, *minhash_stages(layout, filtered, tasks, source.options)]


def arxiv(source: SourceSpec, config: DataConfig, layout: Layout, tasks: int) -> list[Stage]:
    """ArXiv: LaTeX before the first section and after the bibliography removed, comments removed, macros expanded."""
    from .filters import LatexSectionFilter, NonEmptyFilter
    from .formatters import CleanerFormatter

    return [Stage("filter", [input_reader(source), LatexSectionFilter(_excl(layout, "no_section")),
                             CleanerFormatter(["latex"]),
                             NonEmptyFilter(1, "empty", _excl(layout, "empty")), writer(layout.docs())], tasks)]


def stackexchange(source: SourceSpec, config: DataConfig, layout: Layout, tasks: int) -> list[Stage]:
    """Stack Exchange: HTML removed, answers sorted by score."""
    from .filters import NonEmptyFilter
    from .formatters import StackExchangeFormatter

    return [Stage("filter", [input_reader(source), StackExchangeFormatter(),
                             NonEmptyFilter(1, "empty", _excl(layout, "empty")), writer(layout.docs())], tasks)]


def text(source: SourceSpec, config: DataConfig, layout: Layout, tasks: int) -> list[Stage]:
    """Already clean text (the demo corpus): documents copied as they are."""
    from .filters import NonEmptyFilter

    return [Stage("filter", [input_reader(source), NonEmptyFilter(1, "empty", _excl(layout, "empty")),
                             writer(layout.docs())], tasks)]


KINDS: dict[str, Callable[..., list[Stage]]] = {
    "commoncrawl": commoncrawl, "c4": c4, "github": github, "wikipedia": wikipedia, "books": books, "arxiv": arxiv,
    "stackexchange": stackexchange, "text": text}


def source_stages(source: SourceSpec, config: DataConfig, output_dir: str | Path, tasks: int) -> list[Stage]:
    """The filtering stages of one source (tokenization is added by `prepare`)."""
    return KINDS[source.kind](source, config, Layout(output_dir, source.name), tasks)
