"""The replay benchmark's summary arithmetic on hand-made results."""

import pytest

from lookahead_ray.cli import seed_list
from lookahead_ray.replay import (margin_table, markdown_table, mean_normalized, recorded_seconds,
                                            merge_replays, single_correct_margin, summarize)


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


def test_single_correct_margin_pools_seeds():
    trained = {"mlc": [_result({"GSM8K": 0.1}, wins=3.0, losses=1.0, n=5), _result({"GSM8K": 0.1}, wins=0.0, losses=2.0, n=5)]}
    margin = summarize(trained, {})["mlc"]["single_correct_margin"]
    assert margin == {"n": 10, "wins": 3.0, "losses": 3.0, "margin": 0.0}


def test_a_resumed_run_reports_the_time_of_the_run_that_trained_it(tmp_path):
    assert recorded_seconds(tmp_path, 1500.0) == 1500.0  # the first run records its time
    assert recorded_seconds(tmp_path, 4.0) == 1500.0  # a rerun that only resumed it reports that time


@pytest.mark.parametrize("text, expected", [(None, ()), ("2", (2,)), ("1,2", (1, 2))])
def test_seed_list(text, expected):
    assert seed_list(text) == expected


@pytest.mark.parametrize("text", ["1,a", "-1", "1,1"])
def test_bad_seed_list_names_the_flag(text):
    with pytest.raises(SystemExit, match="--seed-list"):
        seed_list(text)


def test_margin_table_rows():
    trained = {
        "mlc": [_result({"GSM8K": 0.1}), _result({"GSM8K": 0.3})],
        "lookahead-mlm": [_result({"GSM8K": 0.4}, wins=2.0, losses=1.0), _result({"GSM8K": 0.4})],
    }
    summary = summarize(trained, {})
    table = margin_table(summary, {"train_seconds": {"mlc": [60.0, 120.0], "lookahead-mlm": [600.0, 660.0]}})
    assert "| lookahead-mlm | +0.200 ± 0.100 | 0.600 | 3–1 (+0.250) | 10, 11 |" in table
    assert "| mlc |  | 0.800 | 2–0 (+0.250) | 1, 2 |" in table


def _replay(seeds, mlc_scores, mlm_scores, data="release"):
    return {"command": f"run {seeds}", "data": data, "seeds": seeds, "full": False,
            "configs": {"mlc": "a.yaml", "lookahead-mlm": "b.yaml"},
            "best_checkpoints": {"mlc": [f"mlc{v}" for v in mlc_scores], "lookahead-mlm": [f"mlm{v}" for v in mlm_scores]},
            "train_seconds": {"mlc": [60.0] * len(mlc_scores), "lookahead-mlm": [600.0] * len(mlm_scores)},
            "trained": {"mlc": [_result({"GSM8K": v}) for v in mlc_scores],
                        "lookahead-mlm": [_result({"GSM8K": v}) for v in mlm_scores]},
            "baselines": {"oracle": _result({"GSM8K": 1.0})}}


def test_merge_collects_seeds_from_several_runs(tmp_path):
    import json

    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(_replay(3, [0.1, 0.3], [0.4, 0.4])))  # a --seeds 3 run stopped after seed 1
    later = {**_replay([2], [0.2], [0.5]), "best_val_score": {"mlc": [0.45], "lookahead-mlm": [0.55]}}
    second.write_text(json.dumps(later))  # --seed-list 2, from a version that records the selecting val_score
    merged = merge_replays([str(first), str(second)], str(tmp_path / "out"))
    assert merged["seeds"] == [0, 1, 2]
    assert merged["best_checkpoints"]["mlc"] == ["mlc0.1", "mlc0.3", "mlc0.2"]
    assert merged["best_val_score"]["mlc"] == [None, None, 0.45]  # the older file recorded none
    assert merged["summary"]["lookahead-mlm"]["margin_vs_mlc_mean"] == pytest.approx((0.3 + 0.1 + 0.3) / 3)
    assert (tmp_path / "out" / "replay.md").is_file() and (tmp_path / "out" / "replay.png").is_file()
    second.write_text(json.dumps(_replay([2], [0.2], [])))  # seed 2 lacks the masked router: left out
    merged = merge_replays([str(first), str(second)], str(tmp_path / "out"))
    assert merged["seeds"] == [0, 1] and merged["left_out"] == ["mlc seed 2"]
    assert merged["trained"]["mlc"] == _replay(3, [0.1, 0.3], [])["trained"]["mlc"]
    merged = merge_replays([str(first), str(second)], str(tmp_path / "out"), routers=("mlc",))
    assert merged["seeds"] == [0, 1, 2] and list(merged["trained"]) == ["mlc"]
    second.write_text(json.dumps(_replay([0], [], [0.5])))
    first.write_text(json.dumps(_replay([1], [0.2], [])))
    with pytest.raises(ValueError, match="no seed"):
        merge_replays([str(first), str(second)], str(tmp_path / "out"))
    first.write_text(json.dumps(_replay(3, [0.1, 0.3], [0.4, 0.4])))
    second.write_text(json.dumps(_replay([2], [0.2], [0.5], data="other")))
    with pytest.raises(ValueError, match="b.json: another dataset"):
        merge_replays([str(first), str(second)], str(tmp_path / "out"))
