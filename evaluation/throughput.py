"""Throughput of an evaluation: requests/s and tokens/s in the progress bar and in results.json.

Rates count the requests computed in this run over the wall time they took (requests read from the cache are
reported separately, not as speed). Tokens are what the model processed for those requests: context and
continuation tokens of each log-likelihood request (each request counted whole, as lm-eval feeds it), every
window of a rolling log-likelihood, and the generated tokens (after cutting at the stop strings) of each sample.
With several processes the counts are summed over all of them and the time is the slowest process's.
"""

from __future__ import annotations

import time
from typing import Any

from .distributed import RunStats


class Meter:
    """Accumulates RunStats and wall time for one task (or any span the caller chooses)."""

    def __init__(self) -> None:
        self.stats, self.seconds = RunStats(), 0.0

    def add(self, stats: RunStats, seconds: float) -> None:
        """Count one adapter call."""
        self.stats.add(stats)
        self.seconds += seconds

    def as_dict(self) -> dict[str, Any]:
        """The results.json `throughput` entry."""
        s, t = self.stats, max(self.seconds, 1e-9)
        return {"requests": s.computed_requests + s.cached_requests, "cached_requests": s.cached_requests,
                "computed_requests": s.computed_requests, "tokens": s.tokens, "seconds": round(self.seconds, 3),
                "requests_per_s": s.computed_requests / t, "tokens_per_s": s.tokens / t}


class Progress:
    """A tqdm bar whose postfix shows this process's requests/s and tokens/s."""

    def __init__(self, total: int, desc: str, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, disable=not enabled, leave=False)
        self.start, self.requests, self.tokens = time.perf_counter(), 0, 0

    def __call__(self, requests: int, tokens: int) -> None:
        """Advance by `requests` that processed `tokens`."""
        self.requests += requests
        self.tokens += tokens
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{self.requests / elapsed:.1f} req/s, {self.tokens / elapsed:.0f} tok/s",
                                 refresh=False)
        self.bar.update(requests)

    def set_total(self, total: int) -> None:
        """The number of requests this process will handle."""
        self.bar.total = total
        self.bar.refresh()

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()
