"""The training mix (data/mix.py) and the val selection score (training/selection.py), by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lookahead_ray.config import TrainConfig, load_train_config  # noqa: F401
from lookahead_ray.data.mix import allocate, draw_train, draw_val, label_prior, mix_summary, tied_mask
from lookahead_ray.training.data import VAL_COLUMNS, training_frames, with_targets
from lookahead_ray.training.selection import SUMS, benchmark_score, row_sums, selection_metrics

CANDS = ("a", "b")


def rows(benchmark: str, scores: list[list[float]], split: str = "train") -> pd.DataFrame:
    return pd.DataFrame({
        "prompt_id": [f"{benchmark}-{split}-{i}" for i in range(len(scores))], "benchmark": benchmark,
        "prompt": [f"q{i}" for i in range(len(scores))], "candidates": [list(CANDS)] * len(scores),
        "responses": [["x", "y"]] * len(scores), "scores": scores, "split": split, "aux": None,
    })


def config(**fields) -> TrainConfig:
    return load_train_config(None, data={"candidates": list(CANDS)}, **fields)


def test_tied_rows_are_found_with_the_tolerance():
    scores = np.array([[1.0, 1.0], [0.0, 1.0], [0.5, 0.55]])
    assert tied_mask(scores).tolist() == [True, False, False]
    assert tied_mask(scores, tolerance=0.1).tolist() == [True, False, True]


def test_allocate_balanced_does_not_fill_from_big_sources_and_fill_does():
    available = {"small": 5, "big": 1000, "mid": 60}
    assert allocate(available, 120, {k: 1.0 for k in available}) == {"small": 5, "big": 40, "mid": 40}
    assert allocate(available, 120, {k: 1.0 for k in available}, fill=True) == {"small": 5, "big": 58, "mid": 57}
    # natural: weights are the sizes, so shares follow them
    natural = allocate(available, 1065, {k: float(v) for k, v in available.items()})
    assert natural == available


def test_draw_train_drops_ties_balances_and_is_seeded():
    frame = pd.concat([rows("code", [[1.0, 0.0]] * 90 + [[1.0, 1.0]] * 10), rows("math", [[0.0, 1.0]] * 20)])
    cfg = config(max_train_samples=40)
    train = draw_train(frame, cfg)
    assert train.groupby("benchmark").size().to_dict() == {"code": 20, "math": 20}
    assert not tied_mask(np.stack(train["scores"].to_numpy())).any()
    assert train["prompt_id"].tolist() == draw_train(frame, cfg)["prompt_id"].tolist()
    kept = draw_train(frame, config(max_train_samples=40, drop_tied=False, mix="natural"))
    assert len(kept) == 40 and kept["benchmark"].value_counts()["code"] > 30  # 100 : 20 by size


def test_source_weights_and_caps_shape_the_draw():
    frame = pd.concat([rows("code", [[1.0, 0.0]] * 100), rows("math", [[0.0, 1.0]] * 100)])
    weighted = draw_train(frame, config(max_train_samples=60, source_weights={"code": 2.0}))
    assert weighted.groupby("benchmark").size().to_dict() == {"code": 40, "math": 20}
    capped = draw_train(frame, config(source_caps={"math": 7}))  # balanced: half of the 107 rows each at most
    assert capped.groupby("benchmark").size().to_dict() == {"code": 54, "math": 7}
    filled = draw_train(frame, config(source_caps={"math": 7}, mix="fill"))
    assert filled.groupby("benchmark").size().to_dict() == {"code": 100, "math": 7}


@pytest.mark.parametrize("fields, named", [
    ({"source_weights": {"math": 0.0}}, "math"),
    ({"source_caps": {"math": 0}}, "math"),
    ({"source_weights": {"poetry": 1.0}}, "poetry"),
])
def test_a_mix_that_leaves_a_benchmark_empty_names_it(fields, named):
    frame = pd.concat([rows("code", [[1.0, 0.0]] * 10), rows("math", [[0.0, 1.0]] * 10)])
    with pytest.raises(ValueError, match=named):
        draw_train(frame, config(**fields))


def test_only_ties_left_is_an_error_naming_the_benchmark():
    frame = pd.concat([rows("code", [[1.0, 0.0]] * 10), rows("GSM8K", [[1.0, 1.0]] * 10)])
    with pytest.raises(ValueError, match="GSM8K"):
        draw_train(frame, config())


def test_val_selects_on_the_test_benchmarks_and_reports_the_rest():
    frame = pd.concat([rows("GSM8K", [[1.0, 0.0]] * 30, "val"), rows("MATH", [[0.0, 1.0]] * 5, "val"),
                       rows("SelfOSSInstructSC2_filtered2", [[0.5, 0.4]] * 50, "val")])
    val = draw_val(frame, config(max_val_per_set=10, max_val_samples=7))
    counts = val.groupby(["benchmark", "selects"]).size().to_dict()
    assert counts == {("GSM8K", True): 10, ("MATH", True): 5, ("SelfOSSInstructSC2_filtered2", False): 7}
    named = draw_val(frame, config(val_sets=["SelfOSSInstructSC2_filtered2"]))
    assert set(named.loc[named["selects"], "benchmark"]) == {"SelfOSSInstructSC2_filtered2"}
    with pytest.raises(ValueError, match="MBPP"):
        draw_val(frame, config(val_sets=["GSM8K", "MBPP"]))


def test_selection_score_is_the_per_benchmark_normalised_score_averaged():
    # benchmark X: 4 rows; oracle = 1 per row, random = 0.5; picks right on 3 of 4 -> (0.75-0.5)/0.5 = 0.5
    scores_x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    picks_x = np.array([0, 1, 0, 0])
    # benchmark Y: 1 row, picked right -> 1.0; equal weight despite 4x fewer rows
    scores_y = np.array([[0.0, 1.0]])
    ones = np.ones((4, 2))
    sums = {"X": row_sums(scores_x, scores_x, ones, picks_x), "Y": row_sums(scores_y, scores_y, np.ones((1, 2)), np.array([1])),
            "S": row_sums(np.array([[0.2, 0.6]]), np.array([[0.0, 1.0]]), np.ones((1, 2)), np.array([0]))}
    assert benchmark_score(sums["X"])[0] == pytest.approx(0.5)
    # gain per row = picked - 0.5 = [.5, .5, .5, -.5]: sample sd = 0.5, se = 0.25, / spread 0.5 = 0.5
    assert benchmark_score(sums["X"])[1] == pytest.approx(0.5)
    metrics = selection_metrics(sums, ("X", "Y"))
    assert metrics["val_score"] == pytest.approx(0.75)
    assert metrics["val_score_se"] == pytest.approx(np.sqrt(0.5 ** 2 + 0.0) / 2)
    assert metrics["trainset_val_reward"] == pytest.approx(0.0)  # S picked its worse candidate
    assert metrics["eval_n"] == 5 and len(SUMS) == 8


def test_a_benchmark_with_no_spread_scores_zero():
    sums = row_sums(np.ones((3, 2)), np.zeros((3, 2)), np.ones((3, 2)), np.array([0, 1, 0]))
    assert benchmark_score(sums) == (0.0, 0.0)


def test_training_frames_carry_what_selection_needs_and_the_prior_is_the_label_mean():
    frame = pd.concat([rows("GSM8K", [[1.0, 0.0]] * 8 + [[0.0, 1.0]] * 2), rows("GSM8K", [[1.0, 0.0]] * 3, "val")])
    frame["prompt_id"] = [f"p{i}" for i in range(len(frame))]
    train, val = training_frames(config(), frame)
    assert list(val.columns) == VAL_COLUMNS and val["selects"].all()
    prior = label_prior(np.stack(train["labels"].to_numpy()), CANDS)
    assert prior == {"a": pytest.approx(0.8), "b": pytest.approx(0.2)}
    summary = mix_summary(frame, with_targets(frame[frame.split == "train"], config(), ["labels", "benchmark"]), val, config())
    assert summary["sources"]["GSM8K"] == {"train_pool": 10, "tied": 0, "drawn": 10, "val": 3, "selects": True}


def test_config_rejects_bad_mix_fields():
    with pytest.raises(ValueError, match="mix"):
        config(mix="uniform")
    with pytest.raises(ValueError, match="source_weights.code"):
        config(source_weights={"code": -1})
    with pytest.raises(ValueError, match="truncation_side"):
        config(truncation_side="middle")
    assert config(eval_every=50).evaluation_interval(150) == 15
    assert config(eval_every=5).evaluation_interval(150) == 5


def test_equal_mix_repeats_a_small_source_up_to_its_share():
    frame = pd.concat([rows("code", [[1.0, 0.0]] * 100), rows("math", [[0.0, 1.0]] * 5)])
    train = draw_train(frame, config(max_train_samples=40, mix="equal"))
    assert train.groupby("benchmark").size().to_dict() == {"code": 20, "math": 20}
    assert train[train.benchmark == "math"]["prompt_id"].nunique() == 5  # the 5 rows, repeated
