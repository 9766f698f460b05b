"""Free-form answer extraction and matching (harness filters/metrics, the paper's SQuAD match and maj1@k)."""

from __future__ import annotations

from evaluation.answer_matching import (exact_match_any, exact_match_hf, majority_vote, regex_filter, squad_match,
                                        squad_normalize)
from evaluation.math_answers import answer_from_completion, is_equiv, last_boxed_only_string, remove_boxed
from evaluation.tasks import gsm8k, nq_open


def test_gsm8k_filters_and_exact_match():
    completion = " She has 3 + 4 = 7 apples.\n#### 1,234\n\nQuestion: next"
    strict = dict(gsm8k.HARNESS.filters)["strict-match"](completion)
    flexible = dict(gsm8k.HARNESS.filters)["flexible-extract"](completion)
    assert strict == "1,234" and flexible == "1,234"
    target = "Janet sells 9 eggs.\n#### 1234"
    assert gsm8k.HARNESS.match(strict, target) == 1.0  # ',' and the reasoning before '#### ' are ignored
    assert dict(gsm8k.HARNESS.filters)["strict-match"]("no number here") == "[invalid]"
    assert gsm8k.HARNESS.match("[invalid]", target) == 0.0
    paper_strict = dict(gsm8k.PAPER.filters)["strict-match"]("So 5 - 2 = 3. The answer is 3.")
    assert paper_strict == "3" and gsm8k.PAPER.match(paper_strict, gsm8k.PAPER.doc_to_target({"answer": "x\n#### 3"}))


def test_exact_match_options():
    assert exact_match_hf("The Beatles!", "the beatles", ignore_case=True, ignore_punctuation=True) == 1.0
    assert exact_match_hf("The Beatles!", "the beatles", ignore_case=True) == 0.0
    assert exact_match_any("beatles", ["The Rolling Stones", "The Beatles"], ignore_case=True,
                           regexes_to_ignore=["\\b(?:The |the |An |A |The |a |an )"]) == 1.0
    assert nq_open.HARNESS.match("the beatles", ["The Beatles"]) == 1.0


def test_squad_normalization_for_the_paper():
    assert squad_normalize("  The  Eiffel-Tower, Paris. ") == "eiffeltower paris"
    assert squad_match("an apple", ["Apple", "pear"]) == 1.0 and squad_match("apples", ["apple"]) == 0.0


def test_majority_vote_hand_computed():
    assert majority_vote(["3", "5", "5", "3", "5"]) == "5"
    assert majority_vote(["3", "5", "5", "3"]) == "3"  # tie: first seen
    assert majority_vote(["[invalid]", "[invalid]", "7"]) == "7"  # invalid extractions do not vote
    assert majority_vote(["[invalid]"]) == "[invalid]"
    flexible = regex_filter("(-?[$0-9.,]{2,})|(-?[0-9]+)", group_select=-1)
    samples = ["so 12", "it is 7", "answer 12", "maybe 7 or 12"]
    assert majority_vote([flexible(s) for s in samples]) == "12"


def test_math_answers():
    solution = "So the total is $\\boxed{\\frac{1}{2}}$, done."
    assert remove_boxed(last_boxed_only_string(solution)) == "\\frac{1}{2}"
    assert is_equiv("0.5", "\\frac{1}{2}") and is_equiv("\\frac12", "\\frac{1}{2}") and is_equiv("1/2", "\\frac{1}{2}")
    assert not is_equiv("3", "\\frac{1}{2}")
    assert answer_from_completion(" The answer is $42$ .") == "42"
    assert answer_from_completion(" 42") == " 42"
    assert last_boxed_only_string("no box") is None
