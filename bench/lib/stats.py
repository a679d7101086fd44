"""Small statistics: percentiles, ROC AUC, recall at a false-positive budget."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def auc(spam: Sequence[float], ham: Sequence[float]) -> float:
    """Area under the ROC curve (probability a spam scores above a ham; ties count half)."""
    if not spam or not ham:
        return math.nan
    labelled = sorted([(s, 1) for s in spam] + [(h, 0) for h in ham])
    # Mann-Whitney U with average ranks for ties.
    rank_sum = 0.0
    i = 0
    while i < len(labelled):
        j = i
        while j < len(labelled) and labelled[j][0] == labelled[i][0]:
            j += 1
        avg_rank = (i + 1 + j) / 2.0
        rank_sum += avg_rank * sum(1 for k in range(i, j) if labelled[k][1] == 1)
        i = j
    n_spam, n_ham = len(spam), len(ham)
    return (rank_sum - n_spam * (n_spam + 1) / 2.0) / (n_spam * n_ham)


def rates_at(spam: Sequence[float], ham: Sequence[float], threshold: float) -> tuple[float, float]:
    """(spam recall, ham false-positive rate) when a score >= threshold means spam."""
    recall = sum(1 for s in spam if s >= threshold) / len(spam) if spam else math.nan
    fp = sum(1 for h in ham if h >= threshold) / len(ham) if ham else math.nan
    return recall, fp


def recall_at_fp(spam: Sequence[float], ham: Sequence[float], max_fp: float) -> tuple[float, float]:
    """Best spam recall with ham false-positive rate <= max_fp, and the threshold that gives it.

    The threshold is placed just above the k-th highest ham score, where k is the largest
    number of ham allowed above it (floor(max_fp * n_ham)).
    """
    if not spam or not ham:
        return math.nan, math.nan
    allowed = math.floor(max_fp * len(ham) + 1e-9)
    ham_desc = sorted(ham, reverse=True)
    # Scores strictly above ham_desc[allowed] flag at most `allowed` ham.
    bar = ham_desc[allowed] if allowed < len(ham_desc) else -math.inf
    recall = sum(1 for s in spam if s > bar) / len(spam)
    return recall, bar
