"""Model selection on val, scored the way `evaluate` scores the test.

`val_score` is the mean over the selecting benchmarks of each benchmark's normalised score
(score - random) / (oracle - random), where score, random and oracle are the mean raw scores of
the picked candidate, of a uniform pick and of the best candidate. Each benchmark counts the same,
however many val rows it has, as each counts the same in the test average. (For the accuracy
benchmarks the mean raw score is the native metric; for judge-graded sets it is the mean grade.)

The statistics are sums, so that workers holding different val shards can add them (all-reduce)
before the ratios are taken.
"""

from __future__ import annotations

import math

import numpy as np

SUMS = ("n", "picked", "oracle", "random", "gain", "gain_sq", "reward", "label_hits")


def row_sums(scores: np.ndarray, normalized: np.ndarray, labels: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """The SUMS of a batch of one benchmark: scores/normalized/labels (N, T), picks (N,) -> (len(SUMS),).

    >>> row_sums(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]]), np.array([1])).tolist()
    [1.0, 0.0, 1.0, 0.5, -0.5, 0.25, 0.0, 0.0]
    """
    rows = np.arange(len(picks))
    picked = scores[rows, picks]  # (N,)
    gain = picked - scores.mean(axis=1)  # (N,) over a uniform pick
    return np.array([len(picks), picked.sum(), scores.max(axis=1).sum(), scores.mean(axis=1).sum(),
                     gain.sum(), (gain ** 2).sum(), normalized[rows, picks].sum(), labels[rows, picks].sum()])


def benchmark_score(sums: np.ndarray) -> tuple[float, float]:
    """(normalised score, its standard error) of one benchmark's SUMS; (0, 0) when no candidate
    is better than another on it (oracle == random), as `metrics.normalized` gives.

    >>> benchmark_score(np.array([2.0, 1.0, 2.0, 1.0, 0.0, 0.5, 1.0, 1.0]))
    (0.0, 1.0)
    """
    n, picked, oracle, random, gain, gain_sq = sums[:6]
    if n == 0:
        return 0.0, 0.0
    spread = (oracle - random) / n
    if spread <= 0:
        return 0.0, 0.0
    variance = max(gain_sq / n - (gain / n) ** 2, 0.0) * n / max(n - 1, 1)  # sample variance of the gain
    return float((picked - random) / n / spread), float(math.sqrt(variance / n) / spread)


def selection_metrics(sums: dict[str, np.ndarray], selecting: tuple[str, ...]) -> dict[str, float]:
    """val_score (mean normalised score over the selecting benchmarks) and val_score_se, one
    val_<benchmark> per benchmark, and the pooled eval_reward / label accuracy of the other val rows."""
    out: dict[str, float] = {}
    values, errors = [], []
    for name in selecting:
        score, error = benchmark_score(sums[name])
        out[f"val_{name}"] = score
        values.append(score)
        errors.append(error)
    out["val_score"] = float(np.mean(values)) if values else 0.0
    out["val_score_se"] = float(math.sqrt(sum(e * e for e in errors)) / len(errors)) if errors else 0.0
    chosen = sum((sums[name] for name in selecting), np.zeros(len(SUMS)))
    others = sum((s for name, s in sums.items() if name not in selecting), np.zeros(len(SUMS)))
    out["eval_reward"] = float(chosen[6] / chosen[0]) if chosen[0] else 0.0  # mean normalised reward
    out["eval_label_acc"] = float(chosen[7] / chosen[0]) if chosen[0] else 0.0
    out["eval_n"] = float(chosen[0])
    if others[0]:
        out["trainset_val_reward"] = float(others[6] / others[0])
    return out
