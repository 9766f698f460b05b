"""Per-document metrics of multiple-choice tasks, and their aggregation (mean ± standard error).

Harness rules (lm-eval 0.4.13 `ConfigurableTask.process_results`): `acc` = argmax of the log-likelihoods (ties → the
first choice), `acc_norm` = argmax of ll / number of *characters* of the choice (without the target delimiter), `mc2`
= probability mass of the true answers, `likelihood_diff`/`pct_stereotype` for CrowS-Pairs. Paper rules (§3):
`acc_char` = the character-normalized choice (the same formula as acc_norm) and `acc_answer` = argmax of
log P(c|ctx) − log P(c|"Answer:") (Brown et al. 2020), for OpenBookQA and BoolQ.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _hit(pred: int, gold: int | list[int]) -> float:
    return float(pred in gold) if isinstance(gold, list) else float(pred == gold)


def char_normalized(lls: Sequence[float], choices: Sequence[str]) -> np.ndarray:
    """ll_i / len(choice_i) in Unicode characters (the paper's and lm-eval's acc_norm normalization)."""
    return np.asarray(lls, dtype=float) / np.array([float(len(c)) for c in choices])


def answer_normalized(lls: Sequence[float], lls_answer: Sequence[float]) -> np.ndarray:
    """log P(c|ctx) − log P(c|"Answer:"): the log of the paper's ratio for OpenBookQA and BoolQ."""
    return np.asarray(lls, dtype=float) - np.asarray(lls_answer, dtype=float)


def mc2(lls: Sequence[float], labels: Sequence[int]) -> float:
    """TruthfulQA mc2: Σ_true p_i / Σ_all p_i with p = exp(ll)."""
    p = np.exp(np.asarray(lls, dtype=float))
    p = p / p.sum()
    return float(p[np.asarray(labels) == 1].sum())


def multiple_choice_metrics(metrics: Sequence[str], lls: Sequence[float], choices: Sequence[str],
                            gold: int | list[int], lls_answer: Sequence[float] | None = None,
                            labels: Sequence[int] | None = None) -> tuple[dict[str, float], int]:
    """(per-document metrics, predicted index) for the metric names a task asks for."""
    out: dict[str, float] = {}
    pred = int(np.argmax(lls))
    for name in metrics:
        if name == "acc":
            out[name] = _hit(pred, gold)
        elif name in ("acc_norm", "acc_char"):
            out[name] = _hit(int(np.argmax(char_normalized(lls, choices))), gold)
        elif name == "acc_answer":
            if lls_answer is None:
                raise ValueError("acc_answer needs the log-likelihoods of the choices after 'Answer:'.")
            out[name] = _hit(int(np.argmax(answer_normalized(lls, lls_answer))), gold)
        elif name == "mc2":
            out[name] = mc2(lls, labels)
        elif name == "likelihood_diff":
            out[name] = abs(lls[0] - lls[1])
        elif name == "pct_stereotype":
            out[name] = 1.0 if lls[0] > lls[1] else 0.0
        else:
            raise ValueError(f"Unknown multiple-choice metric {name!r}.")
    return out, pred


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and its standard error (sample std with ddof=1 over √n, as lm-eval's `mean_stderr`)."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return float("nan"), None
    if arr.size == 1:
        return float(arr[0]), None
    return float(arr.mean()), float(arr.std(ddof=1) / math.sqrt(arr.size))
