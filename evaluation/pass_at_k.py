"""The unbiased pass@k estimator of Chen et al. (2021), as in the `evaluate` library's `code_eval`.

pass@k = 1 − C(n−c, k) / C(n, k) for n samples of which c pass, computed as a stable product. (`evaluate`'s
`code_eval` needs the Hub to load, so the estimator is reproduced here; the tests check it against the formula.)
"""

from __future__ import annotations

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c correct) passes."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass@k needs 0 <= c <= n and k >= 1 (got n={n}, c={c}, k={k}).")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {n}; raise --num-samples.")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))
