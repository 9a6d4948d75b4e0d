"""The quality-cost frontier and the calibration of the cost knob, worked by hand on four queries."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from lookahead_ray.cli import main
from lookahead_ray.config import DataConfig
from lookahead_ray.data.costs import build_table
from lookahead_ray.data.frames import load_frame
from lookahead_ray.evaluation.calibrate import pick_weight, tag_model_version, write_serve_config
from lookahead_ray.evaluation.evaluate import evaluate
from lookahead_ray.evaluation.frontier import format_frontier, frontier_for, frontier_metrics, plot_frontier

REPO = Path(__file__).resolve().parents[2]
NAMES = ("big", "small")


def four_queries() -> pd.DataFrame:
    """GSM8K test rows: `big` is right on all four, `small` on the first two. Every response is 4
    characters (1 token by chars4), so with prices 1000 and 100 per 1k a query costs 1.0 or 0.1."""
    scores = [[1.0, 1.0], [1.0, 1.0], [1.0, 0.0], [1.0, 0.0]]
    return pd.DataFrame({
        "prompt_id": ["0", "1", "2", "3"], "benchmark": ["GSM8K"] * 4, "prompt": ["q"] * 4,
        "candidates": [list(NAMES)] * 4, "responses": [["abcd", "wxyz"]] * 4, "scores": scores,
        "split": ["test"] * 4, "aux": [None] * 4,
    })


CONFIG = DataConfig(candidates=NAMES)
TABLE = build_table(NAMES, {"big": 1000, "small": 100}, None, "test table")
GRID = np.linspace(0.0, 1.0, 5)


def oracle_frontier():
    return frontier_for(four_queries(), ["oracle"], "test", CONFIG, TABLE, "chars4", grid=GRID)


def test_candidates_and_the_mixing_line():
    result = oracle_frontier()
    # accuracy: big 100 %, small 50 %, oracle 100 %, random (uniform) 75 %: normalised 1 and -1
    single = {p["candidate"]: (p["cost"], p["quality"]) for p in result["single"]}
    assert single == {"big": (1.0, 1.0), "small": (0.1, -1.0)}
    assert result["mixing_line"] == [[0.1, -1.0], [1.0, 1.0]]
    assert result["reference"]["best"] == "big" and result["reference"]["cheapest"] == "small"


def test_oracle_sweep_and_its_headline_numbers():
    entry = oracle_frontier()["routers"]["oracle"]
    # w = 0: argmax, ties to `big` -> cost 1.0. w > 0: queries 0 and 1 go to `small` (both right),
    # 2 and 3 stay with `big` (1 - w >= 0 - 0, ties to the lower index) -> cost (0.1 * 2 + 1 * 2) / 4.
    assert [(p["cost_weight"], p["cost"], p["quality"]) for p in entry["points"]] == [
        (0.0, 1.0, 1.0), (0.25, 0.55, 1.0), (0.5, 0.55, 1.0), (0.75, 0.55, 1.0), (1.0, 0.55, 1.0)]
    assert entry["points"][1]["pick_share"] == {"big": 0.5, "small": 0.5}
    assert entry["points"][1]["benchmarks"] == {"GSM8K": 100.0}
    s = entry["summary"]
    # PGR curve: u = (c - 0.1) / 0.9, y = (q + 1) / 2; from (0, 0) up to (0.5, 1), flat after.
    assert s["apgr"] == pytest.approx(0.75) and s["area_above_mixing"] == pytest.approx(0.25)
    # cost 0.25 -> u = 1/6, y = 1/3, q = -1/3; cost 0.5 -> u = 4/9, q = 7/9; cost 0.75 is past the knee
    assert s["quality_share_at_cost"] == pytest.approx({"0.25": -1 / 3, "0.5": 7 / 9, "0.75": 1.0})
    # q = 0.95 on the rising segment: c = 0.1 + (0.95 + 1) / 2 * 0.45
    assert s["cost_share_for_95"] == pytest.approx(0.53875)
    assert s["min_gap_to_mixing"] == pytest.approx(0.0) and s["min_gap_cost_weight"] == 0.0


def test_a_router_below_the_mixing_line_has_a_negative_area():
    class Backwards:  # prefers the wrong candidate: the cheap one where only `big` is right
        def score(self, batch):
            return torch.tensor([[1.0, 0.0] if pid in ("0", "1") else [0.0, 1.0] for pid in batch["prompt_id"]])

    s = frontier_for(four_queries(), {"backwards": Backwards()}, "test", CONFIG, TABLE, "chars4", grid=GRID)
    s = s["routers"]["backwards"]["summary"]
    # every weight: cost 0.55, accuracy 50 % -> q = -1, y = 0 at u = 0.5: under the line
    assert s["min_gap_to_mixing"] == pytest.approx(-0.5)
    assert s["area_above_mixing"] < 0 and s["cost_share_for_95"] is None


class CountingRouter:
    """The oracle's scores, counting every row it is asked to score."""

    def __init__(self):
        self.calls = 0
        self.rows = []

    def score(self, batch):
        self.calls += 1
        self.rows += batch["prompt_id"]
        return torch.as_tensor(np.asarray(batch["scores"], dtype=np.float64))


@pytest.mark.parametrize("points", [2, 101, 1001])
def test_the_sweep_scores_each_query_once_whatever_the_grid(points):
    frame = pd.concat([four_queries()] * 150, ignore_index=True)  # 600 rows: 3 batches of 256
    frame["prompt_id"] = [str(i) for i in range(len(frame))]
    router = CountingRouter()
    result = frontier_for(frame, {"counted": router}, "test", CONFIG, TABLE, "chars4", grid=np.linspace(0, 1, points))
    assert router.calls == math.ceil(600 / 256)
    assert sorted(router.rows, key=int) == [str(i) for i in range(600)]
    assert len(result["routers"]["counted"]["points"]) == points


def test_calibration_picks_a_grid_weight_or_names_the_reachable_range():
    result = oracle_frontier()
    points, ref = result["routers"]["oracle"]["points"], result["reference"]
    # best cost 1.0: a 0.6 budget admits the 0.55 points; the lowest such weight is 0.25
    assert pick_weight(points, ref, "cost_share", 0.6)["cost_weight"] == 0.25
    assert pick_weight(points, ref, "quality_share", 1.0)["cost_weight"] == 0.25
    assert pick_weight(points, ref, "cost_share", 1.0)["quality_share"] == 1.0
    with pytest.raises(ValueError, match="cost share 0.5 cannot be reached.*from 0.550 to 1.000 of the best candidate 'big'"):
        pick_weight(points, ref, "cost_share", 0.5)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"--target-cost-share must be in \(0, 1\]"):
            pick_weight(points, ref, "cost_share", bad)
    with pytest.raises(ValueError, match="--target-quality-share must be a number"):
        pick_weight(points, ref, "quality_share", "high")


def test_the_serve_config_gets_the_weight_and_keeps_its_comments(tmp_path):
    path = tmp_path / "config.yaml"
    shutil.copy(REPO / "deployments" / "config.yaml", path)
    assert write_serve_config(path, 0.37, set_default=True) == [0.0, 0.37, 0.5, 1.0]
    args = yaml.safe_load(path.read_text())["applications"][0]["args"]
    assert args["listed_cost_weights"] == [0.0, 0.37, 0.5, 1.0] and args["default_cost_weight"] == 0.37
    assert "# model `lookahead` without a body cost_weight" in path.read_text()
    assert write_serve_config(path, 0.5) == [0.0, 0.37, 0.5, 1.0]  # already listed: unchanged
    path.write_text("a:\n  listed_cost_weights: [0.0]\nb:\n  listed_cost_weights: [0.0]\n")
    with pytest.raises(ValueError, match="expected one `listed_cost_weights"):
        write_serve_config(path, 0.1)


def rounded(value):
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return [rounded(v) for v in value] if isinstance(value, list) else value


def test_the_frontier_reads_either_layout_and_agrees_with_evaluate(samples_path, tmp_path):
    dataset = tmp_path / "ds"
    assert main(["import-release", str(samples_path), "--out", str(dataset)]) == 0
    config = DataConfig()
    a, b = (frontier_for(load_frame(d, config), ["oracle", "best-single"], "all", config, tokens="chars4")
            for d in (samples_path, dataset))
    # the layouts order rows differently: equal up to the order of float sums
    assert rounded(a["routers"]) == rounded(b["routers"]) and rounded(a["single"]) == rounded(b["single"])
    best = evaluate("best-single", load_frame(samples_path, config), "all", config)
    at_zero = a["routers"]["best-single"]["points"][0]
    assert at_zero["benchmarks"] == {k: v["score"] for k, v in best["benchmarks"].items()}
    assert at_zero["quality"] == pytest.approx(best["average"]["normalized"])
    assert a["routers"]["oracle"]["points"][0]["quality"] == pytest.approx(1.0)
    assert "best-single" in format_frontier(a)
    assert plot_frontier(a, tmp_path / "f.png").stat().st_size > 10_000


def test_cli_frontier_writes_json_table_png_and_mlflow(samples_path, tmp_path, mlflow_uri, capsys):
    out = tmp_path / "f"
    assert main(["frontier", "--data", str(samples_path), "--split", "all", "--routers", "oracle,best-single",
                 "--tokens", "chars4", "--grid-points", "11", "--out", str(out)]) == 0
    result = json.loads((out / "frontier.json").read_text())
    assert set(result["routers"]) == {"oracle", "best-single"} and len(result["grid"]) == 11
    assert (out / "frontier.png").stat().st_size > 10_000 and "APGR" in (out / "frontier.md").read_text()
    assert "mixing line" in capsys.readouterr().out

    import mlflow

    mlflow.set_tracking_uri(mlflow_uri)
    run = mlflow.get_run(result["mlflow_run_id"])
    for name, value in frontier_metrics(result).items():
        assert run.data.metrics[name] == pytest.approx(value)
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)]
    assert {"frontier.json", "frontier.png"} <= set(artifacts)


def test_cli_calibrate_writes_the_serve_config(samples_path, tmp_path, capsys):
    serve = tmp_path / "config.yaml"
    shutil.copy(REPO / "deployments" / "config.yaml", serve)
    assert main(["calibrate", "--router", "oracle", "--data", str(samples_path), "--split", "all", "--tokens",
                 "chars4", "--target-quality-share", "1.0", "--serve-config", str(serve), "--no-mlflow"]) == 0
    calibration = json.loads(capsys.readouterr().out)
    assert calibration["quality_share"] >= 1.0
    assert calibration["cost_weight"] in yaml.safe_load(serve.read_text())["applications"][0]["args"]["listed_cost_weights"]
    assert main(["calibrate", "--router", "oracle", "--data", str(samples_path), "--split", "all", "--tokens",
                 "chars4", "--target-cost-share", "2", "--serve-config", ""]) == 2
    assert "--target-cost-share must be in (0, 1], got 2.0" in capsys.readouterr().err
    assert main(["calibrate", "--router", "oracle,knn", "--data", str(samples_path), "--target-cost-share", "0.5"]) == 2
    assert "calibrate takes one router" in capsys.readouterr().err


def test_the_calibration_is_tagged_on_the_model_version(tmp_path, mlflow_uri):
    import mlflow

    mlflow.set_tracking_uri(mlflow_uri)
    client = mlflow.MlflowClient()
    client.create_registered_model("router-under-test")
    for pool in (NAMES, NAMES, NAMES[::-1]):  # version 3 serves another pool: `latest` skips it
        client.create_model_version("router-under-test", source=str(tmp_path), tags={"candidates": json.dumps(pool)})
    calibration = {"cost_weight": 0.3, "target": {"cost_share": 0.4}, "cost_share": 0.39, "quality_share": 0.97,
                   "best_candidate": "big"}
    tagged = tag_model_version("models:/router-under-test/latest", calibration, "D", "val", list(NAMES))
    assert tagged == "models:/router-under-test/2"
    tags = client.get_model_version("router-under-test", "2").tags
    assert tags["cost_weight/cost_share_0.4"] == "0.3"
    assert json.loads(tags["calibration/cost_share_0.4"])["split"] == "val"


def test_val_split_calibrates_without_touching_test():
    frame = four_queries().assign(split=["val", "val", "test", "test"])
    result = frontier_for(frame, ["oracle"], "val", CONFIG, TABLE, "chars4", grid=GRID)
    assert result["n"] == 2  # queries 0 and 1: both candidates right, so w > 0 picks `small` on both
    assert [p["cost"] for p in result["routers"]["oracle"]["points"]] == [1.0, 0.1, 0.1, 0.1, 0.1]
    with pytest.raises(ValueError, match="no rows of the seven test benchmarks in split 'val'"):
        frontier_for(four_queries(), ["oracle"], "val", CONFIG, TABLE, "chars4", grid=GRID)
