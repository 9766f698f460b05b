"""The paper protocol's normalizations and the harness metrics against hand-computed references."""

from __future__ import annotations

import math

import pytest

from evaluation.scoring import answer_normalized, char_normalized, mc2, mean_and_stderr, multiple_choice_metrics


def test_character_normalization_can_flip_the_decision():
    choices = ["a cat", "an extremely long and detailed answer"]  # 5 and 37 characters
    lls = [-10.0, -20.0]
    assert list(char_normalized(lls, choices)) == [-2.0, -20.0 / 37]
    metrics, pred = multiple_choice_metrics(("acc", "acc_norm", "acc_char"), lls, choices, gold=1)
    assert pred == 0 and metrics == {"acc": 0.0, "acc_norm": 1.0, "acc_char": 1.0}


def test_answer_normalization_is_the_log_ratio():
    lls, lls_answer = [-5.0, -7.0], [-1.0, -6.5]  # P(c|ctx)/P(c|"Answer:"): exp(-4) vs exp(-0.5)
    assert list(answer_normalized(lls, lls_answer)) == [-4.0, -0.5]
    metrics, pred = multiple_choice_metrics(("acc", "acc_answer"), lls, ["no", "yes"], gold=1, lls_answer=lls_answer)
    assert pred == 0 and metrics == {"acc": 0.0, "acc_answer": 1.0}
    with pytest.raises(ValueError, match="Answer:"):
        multiple_choice_metrics(("acc_answer",), lls, ["no", "yes"], gold=1)


def test_mc2_is_true_probability_mass():
    lls = [math.log(0.2), math.log(0.3), math.log(0.1)]
    assert mc2(lls, [1, 0, 1]) == pytest.approx(0.3 / 0.6)


def test_ties_go_to_the_first_choice_and_multi_gold_counts_any():
    metrics, pred = multiple_choice_metrics(("acc",), [-1.0, -1.0], ["x", "y"], gold=[1, 0])
    assert pred == 0 and metrics["acc"] == 1.0


def test_crows_pairs_metrics():
    metrics, _ = multiple_choice_metrics(("likelihood_diff", "pct_stereotype"), [-3.0, -5.5], ["s1", "s2"], gold=0)
    assert metrics == {"likelihood_diff": 2.5, "pct_stereotype": 1.0}


def test_mean_and_stderr():
    values = [1.0, 0.0, 1.0, 1.0]
    mean, se = mean_and_stderr(values)
    sd = math.sqrt(sum((v - 0.75) ** 2 for v in values) / 3)
    assert mean == 0.75 and se == pytest.approx(sd / 2)
    assert mean_and_stderr([0.5]) == (0.5, None)
