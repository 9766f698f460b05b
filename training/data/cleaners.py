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
# A leading comment block: /* ... */, or consecutive lines of one line-comment style, //, # or -- (after an optional
# shebang / encoding line, which stay because they change how the file runs). A `#` line that is a C/C++/ObjC/C#
# preprocessor directive (#include, #define, #if, #pragma, #import, ...) is code, not a comment: it ends the block.
_BLOCK_COMMENT = re.compile(r"\A\s*/\*.*?\*/[ \t]*\n?", re.DOTALL)
_LINE_COMMENT = re.compile(r"[ \t]*(//|#|--)")
_DIRECTIVE = re.compile(
    r"[ \t]*#(?:(?:include|include_next|import|using|define|undef|if|ifdef|ifndef|elif|elifdef|elifndef|else|endif"
    r"|pragma|error|warning|line|region|endregion|nullable)\b"
    r"|[ \t]*(?:include|import)[ \t]*[<\"]|[ \t]*pragma[ \t]+once\b)"
)  # unspaced keywords, plus the unambiguous spaced forms (`# include <x>`); `# if you ...` stays a comment
_KEEP_FIRST = re.compile(r"\A(#![^\n]*\n|#.*coding[:=][^\n]*\n)+")


def _leading_line_comments(body: str) -> int:
    """Length of the block of line comments (and blank lines) that opens `body`, all in the first line's style."""
    end, style = 0, None
    for line in body.split("\n"):
        if line.strip():
            comment = _LINE_COMMENT.match(line)
            if comment is None or (style or comment.group(1)) != comment.group(1) or _DIRECTIVE.match(line):
                break
            style = comment.group(1)
        end += len(line) + 1
    return min(end, len(body)) if style else 0


@register_cleaner("code")
def code(text: str) -> str:
    """Remove a license/copyright header comment at the top of a source file (GitHub rows of Table 1)."""
    keep = _KEEP_FIRST.match(text)
    head, body = (text[: keep.end()], text[keep.end():]) if keep else ("", text)
    block = _BLOCK_COMMENT.match(body)
    end = block.end() if block else _leading_line_comments(body)
    if end and _LICENSE_WORDS.search(body[:end]):
        body = body[end:].lstrip("\n")
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


# Only real markup goes: a tag is `<`, `</` + a standard HTML element name (HTML living standard plus common
# obsolete ones) right after the `<`, attributes of HTML's syntax, then `>` or `/>`. So plain text that uses angle
# brackets stays: C++/Java generics (`vector<int>`, `List<String>`), comparisons (`a<b && b>c`, `x < y > z`),
# `#include <stdio.h>`. Names match case-insensitively but must be all lower or all upper case (`<p>`, `<DIV>`):
# a Capitalised `<Object>` or `<Label>` is a type or a JSX component, not HTML.
_HTML_ELEMENTS = frozenset("""
    a abbr acronym address area article aside audio b base basefont bdi bdo big blink blockquote body br button
    canvas caption center cite code col colgroup data datalist dd del details dfn dialog dir div dl dt em embed
    fieldset figcaption figure font footer form frame frameset h1 h2 h3 h4 h5 h6 head header hgroup hr html i iframe
    img input ins kbd label legend li link main map mark marquee menu meta meter nav nobr noframes noscript object ol
    optgroup option output p param picture pre progress q rp rt ruby s samp script search section select slot small
    source span strike strong style sub summary sup table tbody td template textarea tfoot th thead time title tr
    track tt u ul var video wbr
""".split())
_HTML_NAMES = "|".join(sorted(_HTML_ELEMENTS, key=len, reverse=True))
_HTML_ATTRIBUTES = r"""(?:\s+[A-Za-z_:@][-\w:.@]*(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'=<>`]+))?)*"""
_HTML_TAG = re.compile(rf"<(/?)({_HTML_NAMES})(?=[\s/>]){_HTML_ATTRIBUTES}\s*/?>", re.IGNORECASE)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_HTML_DROP = re.compile(rf"<(script|style|head|noscript)(?=[\s/>]){_HTML_ATTRIBUTES}\s*>.*?</\1\s*>",
                        re.IGNORECASE | re.DOTALL)
_HTML_BREAKS = {"br", "hr", "/p", "/div", "/li", "/h1", "/h2", "/h3", "/h4", "/h5", "/h6", "/tr", "/pre",
                "/blockquote"}
_INCLUDE_BEFORE = re.compile(r"#[ \t]*(?:include|import)[ \t]*\Z")


def _html_tag(match: re.Match) -> str:
    name = match.group(2)
    after_include = _INCLUDE_BEFORE.search(match.string, max(0, match.start() - 32), match.start())
    if after_include or not (name.islower() or name.isupper()):
        return match.group(0)  # `#include <map>`, `List<Object>`: not markup
    return "\n" if (match.group(1) + name.lower()) in _HTML_BREAKS else ""


@register_cleaner("html")
def html_to_text(text: str) -> str:
    """StackExchange rows of Table 1: drop scripts/styles/comments, block ends to newlines, strip tags, unescape."""
    text = _HTML_COMMENT.sub("", text)
    text = _HTML_DROP.sub("", text)
    text = _HTML_TAG.sub(_html_tag, text)
    text = html.unescape(text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


__all__ = ["CLEANERS", "Cleaner", "apply_cleaners", "code", "dedup_lines", "get_cleaner", "gutenberg",
           "html_to_text", "latex", "register_cleaner", "strip_bom"]
