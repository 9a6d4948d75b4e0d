"""Routers that need no training: oracle, random, fixed-i, best-single and kNN.

Each scores a batch (a dict of equal-length lists: prompt_id, benchmark, prompt and, for the
oracle only, the raw `scores`) as (B, T); `route()` in base.py then picks the argmax.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch

from lookahead_ray.config import LabelConfig
from lookahead_ray.data.labels import normalize_scores
from lookahead_ray.data.splits import hash_unit
from lookahead_ray.data.metrics import metric_for, one_hot, parse_aux

log = logging.getLogger(__name__)


class OracleRouter:
    """Picks a candidate with the best raw score (an upper bound; it reads the grades)."""

    def __init__(self, n_candidates: int) -> None:
        self.n_candidates = n_candidates

    def score(self, batch: dict[str, Any]) -> torch.Tensor:
        return torch.as_tensor(np.asarray(batch["scores"], dtype=np.float64))  # (B, T)


class RandomRouter:
    """Uniform random choice, seeded per prompt: the same prompt gets the same pick in any order."""

    def __init__(self, n_candidates: int, seed: int = 0) -> None:
        self.n_candidates = n_candidates
        self.seed = seed

    def score(self, batch: dict[str, Any]) -> torch.Tensor:
        rows = [
            [hash_unit(b, str(p), f"random-{self.seed}-{t}") for t in range(self.n_candidates)]
            for b, p in zip(batch["benchmark"], batch["prompt_id"])
        ]
        return torch.tensor(rows, dtype=torch.float64)  # (B, T)


class FixedRouter:
    """Always candidate `index` (fixed-i)."""

    def __init__(self, n_candidates: int, index: int) -> None:
        if not 0 <= index < n_candidates:
            raise ValueError(f"fixed-{index}: the pool has candidates 0..{n_candidates - 1}")
        self.n_candidates = n_candidates
        self.index = index

    def score(self, batch: dict[str, Any]) -> torch.Tensor:
        out = torch.zeros(len(batch["prompt_id"]), self.n_candidates, dtype=torch.float64)
        out[:, self.index] = 1.0
        return out


def best_candidate(frame: pd.DataFrame, benchmark: str) -> int:
    """The candidate with the best native metric on `frame` (rows of one benchmark); ties -> lower index."""
    scores = np.stack(frame["scores"].to_numpy())  # (N, T)
    aux = parse_aux(frame["aux"].tolist())
    metric = metric_for(benchmark)
    values = [metric(scores, one_hot(np.full(len(scores), t), scores.shape[1]), aux) for t in range(scores.shape[1])]
    return int(np.argmax(values))


class BestSingleRouter:
    """One fixed candidate per benchmark: `choices[benchmark]`, chosen beforehand by `best_candidate`."""

    def __init__(self, n_candidates: int, choices: dict[str, int]) -> None:
        if not choices:
            raise ValueError("best-single needs a chosen candidate for at least one benchmark")
        self.n_candidates = n_candidates
        self.choices = dict(choices)

    def score(self, batch: dict[str, Any]) -> torch.Tensor:
        unknown = sorted(set(batch["benchmark"]) - set(self.choices))
        if unknown:
            raise KeyError(f"best-single has no candidate for benchmark(s) {unknown}")
        choices = torch.tensor([self.choices[b] for b in batch["benchmark"]])
        return torch.nn.functional.one_hot(choices, self.n_candidates).to(torch.float64)


class KNNRouter:
    """kNN over prompt embeddings: the mean normalised score of the k nearest fit prompts (cosine)."""

    def __init__(self, n_candidates: int, fit_rows: pd.DataFrame, encoder, k: int = 10,
                 labels: LabelConfig = LabelConfig()) -> None:
        if fit_rows.empty:
            raise ValueError("knn needs fit rows (training queries) to search")
        if k < 1:
            raise ValueError(f"knn: k must be >= 1, got {k}")
        self.n_candidates = n_candidates
        self.encoder = encoder
        self.k = min(k, len(fit_rows))
        self.keys = torch.as_tensor(encoder.encode(fit_rows["prompt"].tolist()))  # (M, D), unit norm
        self.values = torch.as_tensor(normalize_scores(np.stack(fit_rows["scores"].to_numpy()), labels))  # (M, T)

    def score(self, batch: dict[str, Any]) -> torch.Tensor:
        queries = torch.as_tensor(self.encoder.encode(list(batch["prompt"])))  # (B, D)
        similarity = queries @ self.keys.T  # (B, M)
        nearest = similarity.topk(self.k, dim=1).indices  # (B, k)
        return self.values[nearest].mean(dim=1)  # (B, T)
