"""Few-shot example selection, reproducing lm-evaluation-harness 0.4.13's samplers draw for draw.

`default` is `random.Random(seed)`, advanced once per evaluated document in document order (so which shots a
document gets depends on the order and on `--limit`, exactly as in the harness); `first_n` takes the pool in order.
When the few-shot pool is the evaluated split itself, the harness draws n+1 and drops the document being evaluated.
"""

from __future__ import annotations

import random
from typing import Any, Sequence


class FewShotSampler:
    """Draws few-shot documents from a pool the way lm-eval's `ContextSampler`/`FirstNSampler` do."""

    def __init__(self, pool: Sequence[dict[str, Any]], *, kind: str = "default", seed: int = 1234):
        if kind not in ("default", "first_n"):
            raise ValueError(f"Unknown few-shot sampler {kind!r}; use 'default' (random) or 'first_n'.")
        self.pool = list(pool)
        self.kind = kind
        self.rnd = random.Random(seed)

    def sample(self, n: int, eval_doc: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """`n` shots for one document; `eval_doc` is excluded when the pool is the evaluated split."""
        if n == 0:
            return []
        if self.kind == "first_n":
            pool = [d for d in self.pool if d != eval_doc] if eval_doc is not None else self.pool
            if n > len(pool):
                raise ValueError(f"{n} few-shot examples requested but the pool holds only {len(pool)}.")
            return pool[:n]
        if not self.pool:
            raise ValueError("No documents are available for few-shot sampling; provide the few-shot split.")
        if n + (eval_doc is not None) > len(self.pool):
            raise ValueError(
                f"{n} few-shot examples requested but the pool holds only {len(self.pool)} documents"
                + (" (one of them is the evaluated document)" if eval_doc is not None else "")
                + "; lower --num-fewshot or provide a larger few-shot split."
            )
        if eval_doc is None:
            drawn = self.rnd.sample(self.pool, n)
        else:
            drawn = [d for d in self.rnd.sample(self.pool, n + 1) if d != eval_doc][:n]
        if len(drawn) < n:  # same fallback as the harness when the eval doc occurred twice in the draw
            drawn = self.rnd.sample([d for d in self.pool if d != eval_doc], n)
        return drawn
