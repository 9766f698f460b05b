"""The unbiased pass@k estimator against its closed form 1 − C(n−c, k)/C(n, k)."""

from __future__ import annotations

from math import comb

import pytest

from evaluation.pass_at_k import pass_at_k


@pytest.mark.parametrize("n", [1, 5, 20, 200])
def test_matches_the_formula(n):
    for c in range(n + 1):
        for k in sorted({1, 2, 5, 10, 100, n}):
            if k <= n:
                assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)


def test_pass_at_1_is_the_pass_rate_and_errors_are_clear():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="num-samples"):
        pass_at_k(10, 3, 100)
    with pytest.raises(ValueError):
        pass_at_k(10, 11, 1)
