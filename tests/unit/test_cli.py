"""`lookahead-ray evaluate` and `report` end to end on the format samples, MLflow included."""

import json

import pytest

from lookahead_ray.cli import main
from lookahead_ray.data.schema import TEST_BENCHMARKS


def test_evaluate_writes_the_json_contract(samples_path, tmp_path, mlflow_uri, capsys):
    out = tmp_path / "o.json"
    assert main(["evaluate", "--router", "oracle", "--data", str(samples_path), "--split", "all", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["router"] == "oracle"
    assert set(result["benchmarks"]) == {"MT-Bench", "AlpacaEval", "ArenaHard"}
    assert set(result["benchmarks"]) <= set(TEST_BENCHMARKS)
    for entry in result["benchmarks"].values():
        for key in ("score", "n", "oracle", "random", "best_single", "normalized", "pick_share",
                    "routing_accuracy", "margin_vs_best_single"):
            assert key in entry
        assert entry["score"] == entry["oracle"] and entry["normalized"] == 1.0
        assert sum(entry["pick_share"].values()) == pytest.approx(1.0)
        assert sorted(entry["margin_vs_best_single"]) == ["0", "1", "2", "3", "4", "5"]
    assert set(result["average"]) == {"score", "normalized", "routing_accuracy"}
    assert "MT-Bench" in capsys.readouterr().out

    import mlflow

    mlflow.set_tracking_uri(mlflow_uri)
    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.data.params["router"] == "oracle"
    assert run.data.metrics["ArenaHard/score"] == pytest.approx(result["benchmarks"]["ArenaHard"]["score"])
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)]
    assert "evaluation.json" in artifacts


def test_evaluate_on_an_imported_dataset_matches_the_release(samples_path, tmp_path):
    dataset = tmp_path / "ds"
    assert main(["import-release", str(samples_path), "--out", str(dataset)]) == 0
    for data, name in ((samples_path, "a.json"), (dataset, "b.json")):
        assert main(["evaluate", "--router", "best-single", "--data", str(data), "--split", "all",
                     "--json", str(tmp_path / name), "--no-mlflow"]) == 0
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert a["benchmarks"] == b["benchmarks"]


def test_random_router_reports_its_expectation(samples_path, tmp_path):
    out = tmp_path / "r.json"
    assert main(["evaluate", "--router", "random", "--data", str(samples_path), "--split", "all",
                 "--json", str(out), "--no-mlflow", "--seed", "3"]) == 0
    for entry in json.loads(out.read_text())["benchmarks"].values():
        assert entry["expected_score"] == entry["random"]


@pytest.mark.parametrize("argv,message", [
    (["evaluate", "--router", "nope"], "unknown router"),
    (["evaluate", "--router", "fixed-x"], "fixed-<index>"),
    (["evaluate", "--router", "oracle", "--checkpoint", "c.pt"], "takes no checkpoint"),
])
def test_bad_arguments_fail_with_a_named_cause(samples_path, argv, message, capsys):
    assert main(argv + ["--data", str(samples_path), "--no-mlflow", "--split", "all"]) == 2
    assert message in capsys.readouterr().err


def test_data_that_is_neither_a_dataset_nor_a_release_is_named(tmp_path, capsys):
    assert main(["evaluate", "--router", "oracle", "--data", str(tmp_path), "--no-mlflow"]) == 2
    assert f"{tmp_path}: not a release folder" in capsys.readouterr().err


def test_only_training_sets_leave_nothing_to_evaluate(release_frame):
    from lookahead_ray.evaluation.evaluate import select_rows

    training = release_frame[release_frame["benchmark"] == "SelfOSSInstructSC2_filtered2"]
    with pytest.raises(ValueError, match="no rows of the seven test benchmarks"):
        select_rows(training, "test")


def test_val_split_evaluates_the_test_benchmarks_val_rows_and_fits_on_train(release_frame):
    from lookahead_ray.data.schema import TEST_BENCHMARKS
    from lookahead_ray.evaluation.evaluate import select_rows

    evaluated, fit = select_rows(release_frame, "val")
    assert set(evaluated["split"]) == {"val"} and set(fit["split"]) == {"train"}
    assert set(evaluated["benchmark"]) <= set(TEST_BENCHMARKS)
    expected = release_frame[release_frame["benchmark"].isin(TEST_BENCHMARKS) & (release_frame["split"] == "val")]
    assert len(evaluated) == len(expected) > 0
    def keys(rows):  # prompt ids are numbered within a benchmark
        return set(zip(rows["benchmark"], rows["prompt_id"]))

    assert not keys(release_frame[release_frame["split"] == "test"]) & keys(evaluated)  # never a test query


def test_an_unknown_split_is_named(release_frame):
    from lookahead_ray.evaluation.evaluate import select_rows

    with pytest.raises(ValueError, match="'test', 'val' or 'all', got 'dev'"):
        select_rows(release_frame, "dev")


def test_a_config_with_an_unknown_field_is_named(samples_path, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  candidates: [a]\n  lables: {}\n")
    assert main(["evaluate", "--router", "oracle", "--data", str(samples_path), "--config", str(config), "--no-mlflow"]) == 2
    assert "unknown field(s) ['lables']" in capsys.readouterr().err
