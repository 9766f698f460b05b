"""Our datatrove formatters for the paper's markup cleaning: Wikipedia, ArXiv, Stack Exchange, Gutenberg (§2.1)."""

from __future__ import annotations

import re

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.formatters.base import BaseFormatter

from ..cleaners import apply_cleaners, get_cleaner

_WIKI_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_WIKI_REF = re.compile(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>", re.DOTALL | re.IGNORECASE)
_WIKI_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")  # innermost first; applied until none is left
_WIKI_TABLE = re.compile(r"^\{\|.*?^\|\}", re.DOTALL | re.MULTILINE)
_WIKI_FILE = re.compile(r"\[\[(?:File|Image|Category|Fichier|Datei|Kategorie|Catégorie):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]",
                        re.IGNORECASE)
_WIKI_LINK = re.compile(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]")
_WIKI_EXTERNAL = re.compile(r"\[(?:https?|ftp)://\S+(?:\s+([^\]]*))?\]")
_WIKI_HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1\s*$", re.MULTILINE)
_WIKI_EMPHASIS = re.compile(r"'{2,5}")
_WIKI_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
# Boilerplate sections dropped with everything after them (they close articles), in a few of the 20 languages.
_WIKI_TAIL = re.compile(r"^=+\s*(References|External links|See also|Further reading|Notes|Bibliography|"
                        r"Références|Liens externes|Voir aussi|Einzelnachweise|Weblinks|Siehe auch|Referencias|"
                        r"Enlaces externos|Véase también)\s*=+\s*$", re.MULTILINE | re.IGNORECASE)


def clean_wikitext(text: str) -> str:
    """Wikitext -> plain text: hyperlinks to their anchor text; comments, references, templates, tables, files and
    categories removed; the closing boilerplate sections (References, External links, See also, ...) dropped."""
    tail = _WIKI_TAIL.search(text)
    if tail:
        text = text[: tail.start()]
    text = _WIKI_COMMENT.sub("", text)
    text = _WIKI_REF.sub("", text)
    previous = None
    while previous != text:
        previous, text = text, _WIKI_TEMPLATE.sub("", text)
    text = _WIKI_TABLE.sub("", text)
    text = _WIKI_FILE.sub("", text)
    text = _WIKI_LINK.sub(r"\1", text)
    text = _WIKI_EXTERNAL.sub(lambda m: m.group(1) or "", text)
    text = _WIKI_HEADING.sub(r"\2", text)
    text = _WIKI_EMPHASIS.sub("", text)
    text = _WIKI_TAG.sub("", text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


class WikipediaFormatter(BaseFormatter):
    """Paper: "remove hyperlinks, comments and other formatting boilerplate" from the Wikipedia dumps."""

    name = "📖 Wikipedia markup"

    def format(self, text: str) -> str:
        return clean_wikitext(text)


class CleanerFormatter(BaseFormatter):
    """Any of the package's named cleaners (`training.data.cleaners`) as a datatrove step, e.g. `gutenberg` (drop
    Project Gutenberg's licence header and footer) or `latex` (ArXiv: drop everything before the first section and
    the bibliography, remove comments, expand argument-free user macros)."""

    name = "🧽 Cleaners"

    def __init__(self, names: list[str]):
        super().__init__()
        for name in names:
            get_cleaner(name)
        self.names = list(names)

    def format(self, text: str) -> str:
        return apply_cleaners(text, self.names)


def stackexchange_text(question: str, answers: list[dict]) -> str:
    """A question followed by its answers from the highest score to the lowest (paper: "sorted the answers by
    score"), HTML removed, each answer prefixed like RedPajama's "A:" pairs."""
    html = get_cleaner("html")
    ordered = sorted(answers, key=lambda a: -float(a.get("score", 0)))  # stable: ties keep their order
    parts = [f"Q: {html(question).strip()}"] + [f"A: {html(a.get('text', '')).strip()}" for a in ordered]
    return "\n\n".join(parts)


class StackExchangeFormatter(PipelineStep):
    """Stack Exchange: when a document carries `metadata.question` and `metadata.answers` ([{text, score}]), rebuild
    its text with the answers sorted by score; in every case remove the HTML tags."""

    name = "💬 Stack Exchange"
    type = "✂️ - FORMAT"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        html = get_cleaner("html")
        for doc in data:
            self.stat_update("total")
            with self.track_time():
                answers = doc.metadata.pop("answers", None)
                question = doc.metadata.pop("question", None)
                if isinstance(answers, list) and isinstance(question, str):
                    doc.text = stackexchange_text(question, answers)
                    doc.metadata["answers_sorted"] = len(answers)
                else:
                    doc.text = html(doc.text)
            yield doc


