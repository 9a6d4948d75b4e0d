"""`lookahead-ray submit`: the `ray job submit` line per stage, checked against Ray's own job CLI parser."""

from __future__ import annotations

import json
import shlex

import pytest

from lookahead_ray.cli import main
from lookahead_ray.submit import job_env, submit_command


def parsed(command: list[str]):
    """What `ray job submit` makes of the line: its options and the entrypoint after `--`."""
    from ray.dashboard.modules.job.cli import submit

    assert command[:3] == ["ray", "job", "submit"]
    context = submit.make_context("submit", command[3:])
    return context.params


def test_a_train_line_carries_the_working_dir_env_and_joins_the_cluster():
    command = submit_command("train", ["--config", "configs/replay-mlm-gpu.yaml"], "http://127.0.0.1:8265", ".",
                             {"MLFLOW_TRACKING_URI": "http://10.0.0.10:5000"}, submission_id="train-1")
    params = parsed(command)
    assert params["address"] == "http://127.0.0.1:8265" and params["working_dir"] == "."
    assert params["submission_id"] == "train-1"
    assert json.loads(params["runtime_env_json"]) == {"env_vars": {"MLFLOW_TRACKING_URI": "http://10.0.0.10:5000"}}
    assert list(params["entrypoint"]) == ["python", "-m", "lookahead_ray", "train", "--config",
                                          "configs/replay-mlm-gpu.yaml", "--address", "auto"]


@pytest.mark.parametrize("stage,joins", [("generate", True), ("grade", True), ("tune", True), ("bench", True),
                                         ("evaluate", False), ("import-release", False)])
def test_only_stages_that_start_ray_get_address_auto(stage, joins):
    entry = submit_command(stage, ["--x", "1"])
    assert (entry[-2:] == ["--address", "auto"]) is joins
    assert submit_command(stage, ["--address", "10.0.0.1:6379"]).count("--address") == 2  # ray's, and the stage's own


def test_env_forwards_only_the_named_variables_and_rejects_a_bad_pair():
    environ = {"MLFLOW_TRACKING_URI": "http://h:5000", "AWS_SECRET_ACCESS_KEY": "s", "AWS_ENDPOINT_URL": "http://s3:8333"}
    assert job_env(["HF_TOKEN=t"], None, environ) == {"MLFLOW_TRACKING_URI": "http://h:5000",
                                                      "AWS_ENDPOINT_URL": "http://s3:8333", "HF_TOKEN": "t"}
    assert job_env([], "http://head:5000", environ)["MLFLOW_TRACKING_URI"] == "http://head:5000"
    with pytest.raises(ValueError, match="--env: expected KEY=VALUE"):
        job_env(["NOEQUALS"], None, {})


def test_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="unknown stage 'serve'"):
        submit_command("serve", [])


def test_the_cli_prints_a_line_a_shell_splits_back(capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["submit", "--tracking-uri", "http://10.0.0.10:5000", "--submission-id", "s1", "bench", "replay",
                 "--data", "s3://b/release", "--seeds", "3"]) == 0
    line = capsys.readouterr().out.strip()
    params = parsed(shlex.split(line))
    assert list(params["entrypoint"])[3:] == ["bench", "replay", "--data", "s3://b/release", "--seeds", "3",
                                              "--address", "auto"]
    assert json.loads(params["runtime_env_json"])["env_vars"]["MLFLOW_TRACKING_URI"] == "http://10.0.0.10:5000"
