"""Native metrics of a routed system on one benchmark.

Every metric takes `weights` (N, T): how much of each prompt goes to each candidate. A router's
choice is one-hot; the random router's expectation is uniform (1/T). Linear metrics are then
exact expectations; ArenaHard's win rate is a ratio, for which uniform weights give the ratio of
expectations (the win rate of the pooled battles).
"""

from __future__ import annotations

import json
from typing import Callable

import numpy as np

from lookahead_ray.config import LabelConfig
from lookahead_ray.data.labels import bce_targets
from lookahead_ray.data.release import NO_GRADE

ACCURACY_BENCHMARKS = ("GSM8K", "MATH", "HumanEval", "MBPP")


def one_hot(choices: np.ndarray, n_candidates: int) -> np.ndarray:
    """(N,) candidate indices -> (N, T) weights."""
    weights = np.zeros((len(choices), n_candidates))
    weights[np.arange(len(choices)), choices] = 1.0
    return weights


def accuracy(scores: np.ndarray, weights: np.ndarray, aux: list[dict]) -> float:
    """Accuracy in %: the mean raw score (1 correct, 0 wrong; a share for SelfOSS tests)."""
    return float(100.0 * (weights * scores).sum() / len(scores))


def mtbench_grade(scores: np.ndarray, weights: np.ndarray, aux: list[dict]) -> float:
    """FastChat's MT-Bench score: the mean of all graded turns of the answering model (1-10)."""
    total, count = 0.0, 0.0
    for row_weights, row_aux in zip(weights, aux):
        for w, turns in zip(row_weights, row_aux["turn_scores"]):
            graded = [g for g in turns if g != NO_GRADE]
            total += w * sum(graded)
            count += w * len(graded)
    return float(total / count)


def alpaca_win_rate(scores: np.ndarray, weights: np.ndarray, aux: list[dict]) -> float:
    """AlpacaEval 2 raw win rate in %: mean of (preference - 1), preference in [1, 2]."""
    return float(100.0 * (weights * (scores - 1.0)).sum() / len(scores))


_GAME1 = {"A=B": ("tie", 1), "A>B": ("base", 1), "A>>B": ("base", 3), "B>A": ("model", 1), "B>>A": ("model", 3), None: ("base", 3)}
_GAME2 = {"A=B": ("tie", 1), "A>B": ("model", 1), "A>>B": ("model", 3), "B>A": ("base", 1), "B>>A": ("base", 3), None: ("base", 3)}


def arena_battles(games: list[str | None]) -> tuple[float, float, float]:
    """(model wins, ties, baseline wins) of one question's two games, with Arena-Hard's weight 3
    for a strong verdict; game 1 has the baseline as A, game 2 the model.

    >>> arena_battles(["B>A", "A>>B"])
    (4.0, 0.0, 0.0)
    """
    tally = {"model": 0.0, "tie": 0.0, "base": 0.0}
    for table, verdict in ((_GAME1, games[0]), (_GAME2, games[1])):
        outcome, weight = table[verdict]
        tally[outcome] += weight
    return tally["model"], tally["tie"], tally["base"]


def arena_win_rate(scores: np.ndarray, weights: np.ndarray, aux: list[dict]) -> float:
    """Arena-Hard win rate in % vs gpt-4-0314: the Bradley-Terry MLE over the routed answers' battles.

    With two players the BT (logistic) MLE of Arena-Hard's `compute_mle_elo`, which counts a tie
    as half a win each way, has the closed form (wins + ties / 2) / battles.
    """
    wins = ties = total = 0.0
    for row_weights, row_aux in zip(weights, aux):
        for w, games in zip(row_weights, row_aux["games"]):
            model, tie, base = arena_battles(games)
            wins += w * model
            ties += w * tie
            total += w * (model + tie + base)
    return float(100.0 * (wins + 0.5 * ties) / total)


Metric = Callable[[np.ndarray, np.ndarray, list[dict]], float]

METRICS: dict[str, Metric] = {
    "GSM8K": accuracy,
    "MATH": accuracy,
    "HumanEval": accuracy,
    "MBPP": accuracy,
    "MT-Bench": mtbench_grade,
    "AlpacaEval": alpaca_win_rate,
    "ArenaHard": arena_win_rate,
}


def metric_for(benchmark: str) -> Metric:
    """The benchmark's native metric; training sets (scores in [0, 1]) use accuracy."""
    return METRICS.get(benchmark, accuracy)


def parse_aux(values: list) -> list[dict]:
    return [json.loads(v) if isinstance(v, str) and v else {} for v in values]


def routing_accuracy(scores: np.ndarray, weights: np.ndarray) -> float:
    """Share of prompts sent to a candidate with the prompt's best raw score (ties all count)."""
    best = scores == scores.max(axis=1, keepdims=True)  # (N, T)
    return float((weights * best).sum() / len(scores))


def pick_share(weights: np.ndarray, names: list[str]) -> dict[str, float]:
    return {name: float(share) for name, share in zip(names, weights.mean(axis=0))}


def n_correct(benchmark: str, scores: np.ndarray, labels: LabelConfig = LabelConfig()) -> np.ndarray:
    """How many candidates are correct on each prompt.

    Accuracy benchmarks: a score of 1 (all tests pass / right answer). Graded benchmarks: the
    candidates with a positive label (within `positive_ratio` of the prompt's best).
    """
    if benchmark in ACCURACY_BENCHMARKS:
        return (scores >= 1.0).sum(axis=1)
    return bce_targets(scores, labels).sum(axis=1).astype(int)


def margin_by_correct(scores: np.ndarray, weights: np.ndarray, baseline: np.ndarray, correct: np.ndarray) -> dict[str, dict]:
    """Wins and losses against a baseline's choice (N,), bucketed by the number of correct candidates.

    margin = (wins - losses) / n of the bucket; a win is a higher raw score than the baseline's pick.
    """
    base_score = scores[np.arange(len(scores)), baseline][:, None]  # (N, 1)
    wins = (weights * (scores > base_score)).sum(axis=1)  # (N,)
    losses = (weights * (scores < base_score)).sum(axis=1)
    out = {}
    for k in range(scores.shape[1] + 1):
        mask = correct == k
        n = int(mask.sum())
        w, l = float(wins[mask].sum()), float(losses[mask].sum())
        out[str(k)] = {"n": n, "wins": w, "losses": l, "margin": (w - l) / n if n else 0.0}
    return out


def normalized(score: float, random: float, oracle: float) -> float:
    """(score - random) / (oracle - random); 0 when the oracle is no better than random."""
    spread = oracle - random
    return float((score - random) / spread) if spread != 0 else 0.0
