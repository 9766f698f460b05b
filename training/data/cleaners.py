"""The paper's cheap per-source preprocessing heuristics (§2.1, Table 1), as pure `str -> str` functions.

Each cleaner is stateless, so cleaning never depends on what was read before (resuming a stream re-cleans a
document identically). Mixture configs name cleaners from `CLEANERS`; `register_cleaner` adds more.
The expensive filters of the paper (fastText language id, n-gram LM quality filter, Wikipedia-reference classifier,
book-level near-dedup) need models or a pass over the whole corpus and are out of scope here.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable

Cleaner = Callable[[str], str]
CLEANERS: dict[str, Cleaner] = {}


def register_cleaner(name: str) -> Callable[[Cleaner], Cleaner]:
    """Decorator: make a `str -> str` function available to mixture configs under `name`."""

    def decorate(function: Cleaner) -> Cleaner:
        CLEANERS[name] = function
        return function

    return decorate


def get_cleaner(name: str) -> Cleaner:
    """The cleaner registered as `name`; a ValueError lists the known names otherwise."""
    if name not in CLEANERS:
        raise ValueError(f"Unknown cleaner {name!r}; choose from {', '.join(sorted(CLEANERS))} "
                         "or add one with training.data.cleaners.register_cleaner.")
    return CLEANERS[name]


def apply_cleaners(text: str, names: Iterable[str]) -> str:
    """Run the named cleaners on `text`, in order."""
    for name in names:
        text = get_cleaner(name)(text)
    return text


@register_cleaner("strip_bom")
def strip_bom(text: str) -> str:
    """Remove byte-order marks (U+FEFF) and normalise Windows/old-Mac line endings to LF."""
    return text.replace("\ufeff", "").replace("\r\n", "\n").replace("\r", "\n")


@register_cleaner("dedup_lines")
def dedup_lines(text: str) -> str:
    """Drop every non-blank line that already occurred earlier in the document (compared after stripping).

    The paper's CCNet pipeline deduplicates lines across a whole shard; a per-document version keeps the cleaner
    stateless (and therefore resumable), and removes repeated navigation bars, cookie banners and footers.
    """
    seen: set[str] = set()
    kept = []
    for line in text.split("\n"):
        key = line.strip()
        if key:
            if key in seen:
                continue
            seen.add(key)
        kept.append(line)
    return "\n".join(kept)


# Project Gutenberg frames every e-book with "*** START OF THE PROJECT GUTENBERG EBOOK <title> ***" and
# "*** END OF THE PROJECT GUTENBERG EBOOK <title> ***" (older files: "THIS PROJECT GUTENBERG EBOOK", or
# "*END*THE SMALL PRINT!" before the text and "End of the Project Gutenberg EBook" after it).
_GUTENBERG_START = re.compile(
    r"^\s*(\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG E-?BOOK.*?\*\*\*|\*END\*THE SMALL PRINT!.*)\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_GUTENBERG_END = re.compile(
    r"^\s*(\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG E-?BOOK|End of (the )?Project Gutenberg('s)? E-?Book)",
    re.IGNORECASE | re.MULTILINE,
)


@register_cleaner("gutenberg")
def gutenberg(text: str) -> str:
    """Remove the BOM and the Project Gutenberg header (up to the START marker) and footer (from the END marker)."""
    text = strip_bom(text)
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end():]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip("\n") + "\n"


_LICENSE_WORDS = re.compile(
    r"copyright|licen[cs]e|spdx-license-identifier|all rights reserved|permission is hereby granted|\(c\)",
    re.IGNORECASE,
)
# A leading comment block: /* ... */, or consecutive lines starting with //, # or -- (after an optional
# shebang / encoding line, which stay because they change how the file runs).
_BLOCK_COMMENT = re.compile(r"\A\s*/\*.*?\*/[ \t]*\n?", re.DOTALL)
_LINE_COMMENTS = re.compile(r"\A(?:[ \t]*(?://|#|--)[^\n]*\n|[ \t]*\n)+")
_KEEP_FIRST = re.compile(r"\A(#![^\n]*\n|#.*coding[:=][^\n]*\n)+")


@register_cleaner("code")
def code(text: str) -> str:
    """Remove a license/copyright header comment at the top of a source file (GitHub rows of Table 1)."""
    keep = _KEEP_FIRST.match(text)
    head, body = (text[: keep.end()], text[keep.end():]) if keep else ("", text)
    for pattern in (_BLOCK_COMMENT, _LINE_COMMENTS):
        match = pattern.match(body)
        if match and _LICENSE_WORDS.search(match.group(0)):
            body = body[match.end():].lstrip("\n")
            break
    return head + body


_LATEX_COMMENT = re.compile(r"(?<!\\)%.*$", re.MULTILINE)
_LATEX_FIRST_SECTION = re.compile(r"\\(part|chapter|section|subsection|subsubsection)\*?\s*[{\[]")
_LATEX_BIBLIOGRAPHY = re.compile(
    r"\\begin\{thebibliography\}|\\bibliography\{|\\printbibliography|\\begin\{references\}", re.IGNORECASE
)
# User macros without arguments: \newcommand{\name}{body}, \newcommand\name{body}, \def\name{body}
# (RedPajama's arXiv recipe expands exactly these; bodies with nested braces one level deep).
_LATEX_MACRO = re.compile(
    r"\\(?:re)?newcommand\*?\s*\{?\s*(\\[A-Za-z]+)\s*\}?\s*\{((?:[^{}]|\{[^{}]*\})*)\}"
    r"|\\def\s*(\\[A-Za-z]+)\s*\{((?:[^{}]|\{[^{}]*\})*)\}"
)


@register_cleaner("latex")
def latex(text: str) -> str:
    """ArXiv rows of Table 1: expand argument-free user macros, drop comments, the preamble and the bibliography."""
    macros = {}
    for match in _LATEX_MACRO.finditer(text):
        name, body = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
        macros[name] = body
    text = _LATEX_COMMENT.sub("", text)
    section = _LATEX_FIRST_SECTION.search(text)
    if section:  # "drop everything before the first section" (macro definitions live in the preamble)
        text = text[section.start():]
    bibliography = _LATEX_BIBLIOGRAPHY.search(text)
    if bibliography:
        text = text[: bibliography.start()]
    text = text.replace("\\end{document}", "")
    for name in sorted(macros, key=len, reverse=True):  # longest first: \foobar before \foo
        text = re.sub(re.escape(name) + r"(?![A-Za-z])", lambda _m, b=macros[name]: b, text)
    text = re.sub(r"\n[ \t]+\n", "\n\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


_HTML_DROP = re.compile(r"<(script|style|head|noscript)\b.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL)
_HTML_BREAK = re.compile(r"<\s*(br|/p|/div|/li|/h[1-6]|/tr|/pre|/blockquote|hr)\b[^>]*>", re.IGNORECASE)
_HTML_TAG = re.compile(r"<[^>]+>")


@register_cleaner("html")
def html_to_text(text: str) -> str:
    """StackExchange rows of Table 1: drop scripts/styles/comments, block ends to newlines, strip tags, unescape."""
    text = _HTML_DROP.sub("", text)
    text = _HTML_BREAK.sub("\n", text)
    text = _HTML_TAG.sub("", text)
    text = html.unescape(text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


__all__ = ["CLEANERS", "Cleaner", "apply_cleaners", "code", "dedup_lines", "get_cleaner", "gutenberg",
           "html_to_text", "latex", "register_cleaner", "strip_bom"]
