"""Per-prompt labels as in the paper: min-max normalised scores and BCE targets."""

from __future__ import annotations

import numpy as np

from lookahead_ray.config import LabelConfig


def normalize_scores(scores: np.ndarray, config: LabelConfig = LabelConfig()) -> np.ndarray:
    """Min-max normalise each row of (N, T) raw scores to [0, 1]; a row of ties gives zeros.

    >>> normalize_scores(np.array([[2.0, 4.0, 3.0], [5.0, 5.0, 5.0]])).tolist()
    [[0.0, 1.0, 0.5], [0.0, 0.0, 0.0]]
    """
    scores = np.asarray(scores, dtype=np.float64)
    low = scores.min(axis=1, keepdims=True)  # (N, 1)
    spread = scores.max(axis=1, keepdims=True) - low  # (N, 1)
    tied = spread <= config.tie_tolerance
    return np.where(tied, 0.0, (scores - low) / np.where(tied, 1.0, spread))


def bce_targets(scores: np.ndarray, config: LabelConfig = LabelConfig()) -> np.ndarray:
    """y_t = 1[n_t >= positive_ratio * max_s n_s] on the normalised scores n, as floats.

    A row of ties normalises to zeros, so every candidate of it is a positive (0 >= 0).

    >>> bce_targets(np.array([[0.0, 1.0, 0.85], [3.0, 3.0, 3.0]])).tolist()
    [[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    normalized = normalize_scores(scores, config)  # (N, T)
    best = normalized.max(axis=1, keepdims=True)
    return (normalized >= config.positive_ratio * best).astype(np.float64)
