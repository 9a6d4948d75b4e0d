"""The replay benchmark's summary arithmetic on hand-made results."""

import pytest

from lookahead_ray.evaluation.replay import markdown_table, mean_normalized, single_correct_margin, summarize


def _result(normalized: dict[str, float], wins=1.0, losses=0.0, n=4):
    bucket = {"n": n, "wins": wins, "losses": losses, "margin": (wins - losses) / n}
    return {"benchmarks": {b: {"normalized": v, "margin_vs_best_single": {"1": bucket}} for b, v in normalized.items()}}


def test_mean_normalized_covers_the_accuracy_sets_only():
    result = _result({"GSM8K": 0.2, "MATH": 0.4, "MT-Bench": 10.0})
    assert mean_normalized(result) == pytest.approx(0.3)


def test_single_correct_margin_pools_benchmarks():
    result = _result({"GSM8K": 0.0, "MBPP": 0.0}, wins=3.0, losses=1.0, n=5)
    assert single_correct_margin(result) == {"n": 10, "wins": 6.0, "losses": 2.0, "margin": 0.4}


def test_margins_vs_mlc_over_seeds():
    trained = {
        "mlc": [_result({"GSM8K": 0.1}), _result({"GSM8K": 0.3})],
        "lookahead-mlm": [_result({"GSM8K": 0.4}), _result({"GSM8K": 0.4})],
    }
    baselines = {"oracle": _result({"GSM8K": 1.0})}
    summary = summarize(trained, baselines)
    assert summary["lookahead-mlm"]["margin_vs_mlc_mean"] == pytest.approx(0.2)  # (0.3 + 0.1) / 2
    assert summary["lookahead-mlm"]["margin_vs_mlc_std"] == pytest.approx(0.1)
    assert summary["lookahead-mlm"]["beats_mlc"] and summary["mlc"]["beats_random"]
    assert summary["mlc"]["gap_to_oracle"] == pytest.approx(0.8)
    table = markdown_table(trained, baselines, summary)
    assert "| lookahead-mlm | 0.400 | 0.400 | 0.000 |" in table
