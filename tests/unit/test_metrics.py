"""Metrics against hand-worked examples."""

import numpy as np
import pytest

from lookahead_ray.data.release import arena_score
from lookahead_ray.data import metrics as M


def test_accuracy_and_expectation():
    scores = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    assert M.accuracy(scores, M.one_hot(np.array([1, 0, 0]), 2), []) == pytest.approx(100 / 3)
    assert M.accuracy(scores, np.full((3, 2), 0.5), []) == pytest.approx(50.0)  # (0.5 + 0 + 1) / 3


def test_mtbench_leaves_ungraded_turns_out():
    aux = [{"turn_scores": [[9.0, -1.0], [6.0, 8.0]]}, {"turn_scores": [[4.0, 5.0], [7.0, 7.0]]}]
    picks = M.one_hot(np.array([0, 0]), 2)
    # graded turns of the picks: 9, 4, 5 -> 6.0
    assert M.mtbench_grade(np.zeros((2, 2)), picks, aux) == pytest.approx(6.0)


def test_alpaca_win_rate_is_mean_preference_minus_one():
    scores = np.array([[1.25, 2.0], [1.0, 1.5]])
    assert M.alpaca_win_rate(scores, M.one_hot(np.array([1, 0]), 2), []) == pytest.approx(50.0)


def test_arena_battles_weights_and_sides():
    # game 1: baseline is A; game 2: the model is A
    assert M.arena_battles(["A>B", "A>B"]) == (1.0, 0.0, 1.0)
    assert M.arena_battles(["B>>A", "A=B"]) == (3.0, 1.0, 0.0)
    assert M.arena_battles([None, "B>A"]) == (0.0, 0.0, 4.0)
    assert arena_score(["B>>A", "A=B"]) == 3.0


def test_arena_win_rate_by_hand():
    aux = [{"games": [["B>>A", "A=B"], ["A>B", "B>A"]]}, {"games": [["A>B", "A>B"], ["A=B", "A=B"]]}]
    # pick 0 then 1: battles (3 wins, 1 tie, 0) + (0, 2 ties, 0) -> (3 + 1.5) / 6
    picks = M.one_hot(np.array([0, 1]), 2)
    assert M.arena_win_rate(np.zeros((2, 2)), picks, aux) == pytest.approx(75.0)


def test_routing_accuracy_counts_ties_as_right():
    scores = np.array([[1.0, 1.0, 0.0], [0.0, 0.5, 0.2]])
    assert M.routing_accuracy(scores, M.one_hot(np.array([1, 2]), 3)) == pytest.approx(0.5)


def test_margin_by_number_correct():
    scores = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    router = M.one_hot(np.array([0, 1, 0, 0]), 2)
    baseline = np.array([0, 0, 1, 1])
    correct = M.n_correct("GSM8K", scores)
    assert correct.tolist() == [1, 1, 2, 1]
    margin = M.margin_by_correct(scores, router, baseline, correct)
    assert margin["1"] == {"n": 3, "wins": 1.0, "losses": 1.0, "margin": 0.0}
    assert margin["2"] == {"n": 1, "wins": 0.0, "losses": 0.0, "margin": 0.0}
    assert margin["0"]["n"] == 0


def test_normalized():
    assert M.normalized(80.0, 60.0, 100.0) == pytest.approx(0.5)
    assert M.normalized(50.0, 50.0, 50.0) == 0.0
