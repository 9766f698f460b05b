"""MATH answer extraction and equivalence, as lm-eval's `hendrycks_math/utils.py` (from Hendrycks et al.'s MATH code).

`last_boxed_only_string` + `remove_boxed` pull the `\\boxed{...}` answer out of a solution; `is_equiv` compares
two answers after `strip_string`'s LaTeX normalization (fractions, sqrt, units, spaces, `0.5` → `\\frac{1}{2}`).
"""

from __future__ import annotations


def last_boxed_only_string(text: str) -> str | None:
    """The last `\\boxed{...}` (or `\\fbox{...}`) with balanced braces, or None."""
    if "\\boxed " in text:
        return "\\boxed " + text.split("\\boxed ")[-1].split("$")[0]
    idx = text.rfind("\\boxed")
    if idx < 0:
        idx = text.rfind("\\fbox")
        if idx < 0:
            return None
    depth = 0
    for i in range(idx, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[idx: i + 1]
    return None


def remove_boxed(text: str | None) -> str | None:
    """The inside of `\\boxed{...}` / `\\boxed ...`; None when `text` is not boxed."""
    if text is None:
        return None
    if text.startswith("\\boxed "):
        return text[len("\\boxed "):]
    if text.startswith("\\boxed{") and text.endswith("}"):
        return text[len("\\boxed{"):-1]
    if text.startswith("\\fbox{") and text.endswith("}"):
        return text[len("\\fbox{"):-1]
    return None


def _fix_fracs(s: str) -> str:
    parts = s.split("\\frac")
    out = parts[0]
    for sub in parts[1:]:
        out += "\\frac"
        if sub[:1] == "{":
            out += sub
            continue
        if len(sub) < 2:
            return s
        a, b, rest = sub[0], sub[1], sub[2:]
        out += ("{" + a + "}{" + b + "}" + rest) if b != "{" else ("{" + a + "}" + b + rest)
    return out


def _fix_a_slash_b(s: str) -> str:
    if len(s.split("/")) != 2:
        return s
    a, b = s.split("/")
    try:
        if s != f"{int(a)}/{int(b)}":
            return s
        return "\\frac{" + str(int(a)) + "}{" + str(int(b)) + "}"
    except ValueError:
        return s


def _fix_sqrt(s: str) -> str:
    if "\\sqrt" not in s:
        return s
    parts = s.split("\\sqrt")
    out = parts[0]
    for sub in parts[1:]:
        out += ("\\sqrt{" + sub[0] + "}" + sub[1:]) if sub[:1] not in ("{", "") else ("\\sqrt" + sub)
    return out


def strip_string(s: str) -> str:
    """MATH's answer normalization."""
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac").replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "")
    if "\\text{ " in s:  # units on the right
        parts = s.split("\\text{ ")
        if len(parts) == 2:
            s = parts[0]
    s = s.replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    if len(s.split("=")) == 2 and len(s.split("=")[0]) <= 2:
        s = s.split("=")[1]
    s = _fix_sqrt(s).replace(" ", "")
    s = _fix_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _fix_a_slash_b(s)


def is_equiv(a: str | None, b: str | None) -> bool:
    """Equal after `strip_string` (both None counts as equal, one None as different)."""
    if a is None or b is None:
        return a is None and b is None
    try:
        return strip_string(a) == strip_string(b)
    except Exception:  # malformed LaTeX: fall back to the raw strings, as the reference code does
        return a == b


def answer_from_completion(completion: str) -> str:
    """lm-eval's rule for a generated answer: the text between the first and last `$`, else the whole text."""
    dollars = [i for i, ch in enumerate(completion) if ch == "$"]
    return completion if len(dollars) <= 1 else completion[dollars[0] + 1: dollars[-1]]
