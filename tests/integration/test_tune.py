"""Sweeps: the repo's sweep files load and bad ones are refused before any trial (seconds, no Ray);
then `lookahead-ray tune` end to end on a tiny model (integration) with its record read back
through the MLflow REST API of `mlflow ui`: trial runs grouped under the sweep, params, curves,
plots, best.yaml and the registered model, which loads by name and version."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from lookahead_ray.config import load_train_config
from lookahead_ray.tuning import SweepConfig, load_sweep, trial_config

REPO = Path(__file__).resolve().parents[2]

EXPERIMENT = "lookahead-ray-tune-lookahead-mlm"
REGISTERED = "tiny-sweep"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, release_frame):
    """24 train and 8 val GSM8K queries of the release, and a 2-layer BERT backbone."""
    from tests.tiny_models import gsm8k_routing_data

    data, backbone = gsm8k_routing_data(tmp_path_factory.mktemp("tune"), release_frame, 24, 8)
    return {"data": data, "backbone": backbone}


def sweep_file(path: Path, backbone: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "train": {"backbone": str(backbone), "max_prompt_len": 32, "batch_size": 8, "max_steps": 3, "eval_every": 1,
                  "register_as": REGISTERED, "drop_tied": False, "mix": "natural"},
        "space": {"curriculum": {"r0": {"uniform": [0.0, 0.8]}, "warmup_ratio": {"uniform": [0.2, 0.8]},
                                 "shape": {"choice": ["linear", "cosine", "step"]}},
                  "aux_weight": {"uniform": [0.0, 0.5]}, "lr": {"loguniform": [1e-4, 1e-2]},
                  "block_len": {"choice": [8, 12]}},
        "num_samples": 2, "max_concurrent_trials": 2,
    }))
    return path


@contextlib.contextmanager
def mlflow_ui(folder: Path):
    """`mlflow ui` on a free loopback port over folder/mlflow.db, as `make mlflow-ui` serves ./mlflow.db."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri",
               f"sqlite:///{folder / 'mlflow.db'}", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = folder / "mlflow-ui.log"
    with open(log, "w") as out:
        server = subprocess.Popen(command, cwd=folder, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=10)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert server.poll() is None and time.time() < deadline, log.read_text()[-3000:]
                time.sleep(1)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn worker: a session of their own
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


def rest(base: str, endpoint: str, body: dict | None = None, **query) -> dict:
    url = f"{base}/api/2.0/mlflow/{endpoint}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.parametrize("path,router", [("tune/curriculum.yaml", "lookahead-mlm"), ("tune/causal.yaml", "lookahead-clm"),
                                         ("tune/replay-mlc.yaml", "mlc"), ("tune/replay-mlm.yaml", "lookahead-mlm"),
                                         ("tune/replay-clm.yaml", "lookahead-clm"),
                                         ("tune/replay-clm-aux.yaml", "lookahead-clm"),
                                         ("tune/replay-clm-aux-grid.yaml", "lookahead-clm")])
def test_the_repo_sweeps_load(path, router):
    sweep, base = load_sweep(REPO / path)
    assert base.router == router and sweep.metric == "val_score"  # selection = evaluation
    assert sweep.trial_count() == (3 if sweep.has_grid() else 4)  # every sweep's budget: 4 draws, or a 3-point grid
    sample = {"lr": 1e-4, "curriculum": {"r0": 0.5}} if router == "lookahead-mlm" else {"lr": 1e-4, "aux_weight": 0.1}
    cfg = trial_config(base, sample, name="t")
    assert cfg.lr == 1e-4 and cfg.name == "t" and cfg.max_steps == base.max_steps
    if router == "lookahead-clm":
        assert cfg.aux_weight == 0.1 and cfg.id_token_noise == base.id_token_noise
    if router == "lookahead-mlm":
        assert cfg.curriculum.r0 == 0.5 and cfg.curriculum.shape == base.curriculum.shape  # merged, not replaced


@pytest.mark.parametrize("change,message", [
    ({"router": "lookahead-clm"}, "lookahead-clm does not use (block_len|curriculum)"),
    ({"space": {"lr": {"uniform": [0.1, 0.01]}}}, "low < high"),
    ({"router": "mlc", "space": {"aux_ramp_ratio": {"uniform": [0.0, 0.5]}}}, "mlc does not use aux_ramp_ratio"),
    ({"space": {"aux_ramp_ratio": {"uniform": [0.0, 1.5]}}}, "aux_ramp_ratio must be in"),
    ({"space": {"curriculum": {"warmup_ratio": {"uniform": [0.0, 0.5]}}}}, "warmup_ratio must be in"),
    ({"space": {"nope": {"choice": [1, 2]}}}, r"unknown field\(s\) \['nope'\]"),
    ({"space": {"lr": 0.1}}, "expected a mapping like"),
    ({"mode": "best"}, "mode must be"),
])
def test_bad_sweeps_are_refused_before_any_trial(tmp_path, change, message):
    raw = yaml.safe_load((REPO / "tune/curriculum.yaml").read_text())
    router = change.pop("router", None)
    raw.update(change)
    raw["base"] = str(REPO / "configs/train-mlm-cpu.yaml")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=message):
        load_sweep(tmp_path / "s.yaml", router=router)


def test_a_grid_leaf_runs_every_value_without_optuna():
    from ray import tune
    from ray.tune.search import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    from lookahead_ray.tuning import search_algorithm, tune_space

    space = {"aux_weight": {"grid": [0.0, 0.1, 0.2]}, "lr": {"grid": [1e-4, 3e-4]}}
    sweep = SweepConfig(space=space, num_samples=2, max_concurrent_trials=1)
    assert sweep.grid_size() == 6 and sweep.trial_count() == 12
    assert tune_space(space)["aux_weight"] == tune.grid_search([0.0, 0.1, 0.2])
    generator = search_algorithm(sweep)
    # Tune ignores TuneConfig.max_concurrent_trials for a generator instance: the generator must hold it
    assert isinstance(generator, BasicVariantGenerator) and generator.max_concurrent == 1
    ranges = SweepConfig(space={"lr": {"uniform": [1e-4, 3e-4]}, "aux_weight": {"choice": [0.1, 0.2]}})
    assert ranges.trial_count() == 4 and isinstance(search_algorithm(ranges), OptunaSearch)


def test_an_empty_grid_is_refused():
    with pytest.raises(ValueError, match="space.aux_weight: grid needs a list"):
        SweepConfig(space={"aux_weight": {"grid": []}})


def test_sweep_config_defaults_are_valid():
    assert SweepConfig(space={"lr": {"loguniform": [1e-5, 1e-3]}}).mode == "max"


@pytest.mark.integration
@pytest.mark.slow
def test_tune_sweep_is_recorded_in_mlflow_and_registers_the_best(tiny, tmp_path, monkeypatch):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the default: ./mlflow.db
    command = [str(Path(sys.executable).parent / "lookahead-ray"), "tune", "--router", "lookahead-mlm",
               "--space", str(sweep_file(tmp_path / "sweep.yaml", tiny["backbone"])), "--data", str(tiny["data"])]
    done = subprocess.run(command, cwd=tmp_path, env={**env, "RAY_AUTH_MODE": "disabled"}, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    outcome, _ = json.JSONDecoder().raw_decode(done.stdout[done.stdout.rindex("\n{\n") + 1:])  # workers may print after it
    assert len(outcome["trials"]) == 2 and outcome["registered"] == f"models:/{REGISTERED}/1"
    assert f"parent run {outcome['parent_run_id']} at sqlite:///" in done.stdout  # where to look, said at start

    best = load_train_config(outcome["best_config"])  # a serialised TrainConfig
    params = next(t["params"] for t in outcome["trials"] if t["trial_id"] == outcome["best_trial"])
    assert (best.lr, best.block_len, best.curriculum.shape, best.curriculum.r0) == (
        params["lr"], params["block_len"], params["curriculum"]["shape"], params["curriculum"]["r0"])
    assert outcome["best_metric"] == max(t["best"] for t in outcome["trials"])

    with mlflow_ui(tmp_path) as base:
        check_rest_api(base, outcome)

    import mlflow
    import pandas as pd

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    scores = mlflow.pyfunc.load_model(f"models:/{REGISTERED}/1").predict(pd.DataFrame({"prompt": ["1 + 1?", "hi"]}))
    assert scores.shape == (2, 5) and list(scores.columns)[0] == "Yi-1.5-34B-Chat"


def check_rest_api(base: str, outcome: dict) -> None:
    """What the MLflow UI shows, read through its REST API."""
    experiment = rest(base, "experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]
    runs = rest(base, "runs/search", {"experiment_ids": [experiment["experiment_id"]],
                                      "filter": f"tags.sweep = '{outcome['name']}'"})["runs"]
    by_kind = {}
    for run in runs:
        tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
        by_kind.setdefault(tags.get("kind"), []).append((run, tags))
    assert sorted((k, len(v)) for k, v in by_kind.items()) == [("retrain", 1), ("sweep", 1),
                                                               ("trial", len(outcome["trials"]))]
    parent = by_kind["sweep"][0][0]["info"]["run_id"]
    assert parent == outcome["parent_run_id"]
    assert by_kind["sweep"][0][0]["info"]["status"] == "FINISHED"
    assert {p["path"] for p in artifacts(base, parent)} >= {"best.yaml", "trials.json", "base_config.json"}

    for run, tags in by_kind["trial"]:
        run_id = run["info"]["run_id"]
        assert tags["mlflow.parentRunId"] == parent  # nested under the sweep in the UI
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        trial = next(t for t in outcome["trials"] if t["run_id"] == run_id)
        assert float(params["lr"]) == pytest.approx(trial["params"]["lr"])
        assert params["curriculum.shape"] == trial["params"]["curriculum"]["shape"]
        assert params["block_len"] == str(trial["params"]["block_len"])
        for key in ("eval_reward", "mask_rate", "loss"):
            history = rest(base, "metrics/get-history", run_id=run_id, metric_key=key)["metrics"]
            assert len(history) >= trial["evaluations"], key
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        shares = [v for k, v in metrics.items() if k.startswith("pick_share/")]
        assert len(shares) == 5 and sum(shares) == pytest.approx(1.0)
        plots = {p["path"]: p for p in artifacts(base, run_id, "plots")}
        assert set(plots) == {"plots/curriculum.png", "plots/val_score.png", "plots/pick_share.png"}
        assert all(int(p["file_size"]) > 1000 for p in plots.values())
        png = urllib.request.urlopen(f"{base}/get-artifact?" + urllib.parse.urlencode(
            {"path": "plots/curriculum.png", "run_uuid": run_id}), timeout=30).read()
        assert png[:4] == b"\x89PNG"

    version = rest(base, "model-versions/get", name=REGISTERED, version="1")["model_version"]
    assert version["run_id"] == outcome["retrain_run_id"]
    tags = {t["key"]: t["value"] for t in version.get("tags", [])}
    assert json.loads(tags["candidates"])[0] == "Yi-1.5-34B-Chat" and tags["router"] == "lookahead-mlm"


def artifacts(base: str, run_id: str, path: str = "") -> list[dict]:
    return rest(base, "artifacts/list", run_id=run_id, path=path).get("files", [])
