"""Turning generated text into an answer and comparing it with the reference (free-form tasks).

`exact_match_hf` is lm-eval's `exact_match_hf_evaluate` (the `evaluate` library's exact_match): each regex in
`regexes_to_ignore` is removed from both sides, then lower-casing and punctuation stripping if asked, then `==`.
`regex_filter` and `take_first` are lm-eval's filters. `squad_normalize` is the SQuAD answer normalization the paper's
NQ/TriviaQA evaluation uses; `majority_vote` is the paper's maj1@k.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Any, Callable, Iterable


def exact_match_hf(prediction: str, reference: str, *, regexes_to_ignore: Iterable[str] = (),
                   ignore_case: bool = False, ignore_punctuation: bool = False) -> float:
    """1.0 when the normalized prediction equals the normalized reference."""
    pred, ref = prediction, reference
    for pattern in regexes_to_ignore:
        pred, ref = re.sub(pattern, "", pred), re.sub(pattern, "", ref)
    if ignore_case:
        pred, ref = pred.lower(), ref.lower()
    if ignore_punctuation:
        table = str.maketrans("", "", string.punctuation)
        pred, ref = pred.translate(table), ref.translate(table)
    return float(pred == ref)


def exact_match_any(prediction: str, references: Any, **options: Any) -> float:
    """Exact match against one reference or any of a list (lm-eval's multi-target rule)."""
    refs = references if isinstance(references, list) else [references]
    return float(any(exact_match_hf(prediction, str(r), **options) for r in refs))


def regex_filter(pattern: str, group_select: int = 0, fallback: str = "[invalid]") -> Callable[[str], str]:
    """lm-eval's `regex` filter followed by `take_first`: the `group_select`-th match (a tuple match's first
    non-empty group), else `fallback`."""
    compiled = re.compile(pattern)

    def apply(text: str) -> str:
        matches = compiled.findall(text)
        if not matches:
            return fallback
        match = matches[group_select]
        if isinstance(match, tuple):
            match = [m for m in match if m]
            match = match[0] if match else fallback
        return match.strip()

    return apply


def strip_whitespace(text: str) -> str:
    """lm-eval's `remove_whitespace` filter (= `str.strip`)."""
    return text.strip()


def squad_normalize(text: str) -> str:
    """Lower-case, drop punctuation and the articles a/an/the, collapse whitespace (SQuAD / DPR evaluation)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_match(prediction: str, references: Any) -> float:
    """1.0 when the normalized prediction equals any normalized reference (the paper's NQ/TriviaQA exact match)."""
    refs = references if isinstance(references, list) else [references]
    pred = squad_normalize(prediction)
    return float(any(pred == squad_normalize(str(r)) for r in refs))


def majority_vote(answers: list[str], invalid: str = "[invalid]") -> str:
    """maj1@k: the most frequent extracted answer (ties: the one seen first); `invalid` if none is valid."""
    valid = [a for a in answers if a != invalid]
    if not valid:
        return invalid
    counts = Counter(valid)
    best = max(counts.values())
    return next(a for a in valid if counts[a] == best)
