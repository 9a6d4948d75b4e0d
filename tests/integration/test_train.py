"""`lookahead-ray train` for each router: a few steps on Ray Train, a worker crash and resume,
MLflow run + registry, then `evaluate --checkpoint` on the result."""

import dataclasses
import json
from pathlib import Path

import mlflow
import pytest
import torch

from lookahead_ray.cli import main
from lookahead_ray.config import TrainConfig
from lookahead_ray.data.schema import write_dataset
from lookahead_ray.routers.checkpoint import WEIGHTS_FILE, load_train_state
from lookahead_ray.training.trainer import train
from tests.tiny_models import save_tiny_bert, save_tiny_llama

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory, release_frame):
    """48 train and 16 val GSM8K/MBPP queries of the real release, plus test rows to evaluate."""
    parts = []
    for benchmark in ("GSM8K", "MBPP"):
        rows = release_frame[release_frame["benchmark"] == benchmark]
        parts += [rows[rows["split"] == "train"].head(24), rows[rows["split"] == "val"].head(8),
                  rows[rows["split"] == "test"].head(10)]
    import pandas as pd

    out = tmp_path_factory.mktemp("data") / "tiny"
    write_dataset(pd.concat(parts, ignore_index=True), out, {"candidates": list(release_frame["candidates"].iloc[0])})
    return out


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"bert": str(save_tiny_bert(root / "bert")), "llama": str(save_tiny_llama(root / "llama"))}


@pytest.mark.parametrize("router,backbone", [("lookahead-mlm", "bert"), ("lookahead-clm", "llama"), ("mlc", "bert")])
def test_train_crash_resume_register_and_evaluate(router, backbone, ray_local, tiny_dataset, backbones, tmp_path,
                                                  mlflow_uri, samples_path, capsys):
    cfg = TrainConfig(router=router, dataset=str(tiny_dataset), backbone=backbones[backbone], max_prompt_len=32,
                      block_len=8, max_response_len=8, batch_size=8, max_steps=4, eval_every=2, min_evals=2, lr=1e-3,
                      drop_tied=False, mix="natural",  # all 48 rows: 6 steps, so max_steps=4 decides
                      storage_path=str(tmp_path / "runs"), name=f"t-{router}", max_failures=1,
                      register_as=f"tiny-{router}",
                      weight_ema=0.5 if router == "lookahead-clm" else 0.0)  # one router resumes with an average
    marker = tmp_path / "crashed"
    outcome = train(cfg, extra={"crash_once_at_step": 3, "crash_marker": str(marker)})

    assert marker.exists(), "the worker was not killed"
    # resumed from the step-2 checkpoint, not from scratch: steps 1-2 were logged once, step 3 twice
    client = mlflow.MlflowClient(mlflow_uri)
    steps = [m.step for m in client.get_metric_history(outcome.mlflow_run_id, "loss")]
    assert sorted(steps) == [1, 2, 3, 3, 4]
    if router == "lookahead-mlm":
        rates = {m.step: m.value for m in client.get_metric_history(outcome.mlflow_run_id, "mask_rate")}
        assert rates[1] < rates[2] <= 1.0  # r0 = 0.3 rising to 1 over 20 % of 4 steps
    assert outcome.best_metrics["step"] in (2, 4)
    saved = load_train_state(outcome.best_checkpoint)
    assert saved["position"]["step"] == outcome.best_metrics["step"]
    if router == "lookahead-clm":  # the checkpoint's router is the average; the raw weights differ and ride along
        averaged = torch.load(Path(outcome.best_checkpoint) / WEIGHTS_FILE, weights_only=True)
        assert averaged.keys() == saved["raw_weights"].keys()
        assert any(not torch.equal(averaged[k], saved["raw_weights"][k]) for k in averaged)
    else:
        assert "raw_weights" not in saved
    assert outcome.registered == f"models:/tiny-{router}/1"
    version = client.get_model_version(f"tiny-{router}", "1")
    assert json.loads(version.tags["candidates"])[0] == "Yi-1.5-34B-Chat"
    if router == "mlc":  # a rerun of the finished run (as `bench replay` does) restores it: same checkpoint and val
        again = train(cfg, mlflow_enabled=False)
        assert (again.best_checkpoint, again.best_metrics["val_score"]) == (outcome.best_checkpoint,
                                                                              outcome.best_metrics["val_score"])
        # the same name and storage with another recipe would resume the old run: refused, naming the field
        with pytest.raises(ValueError, match=r"t-mlc holds a run started with another config \(lr: 0.001 -> 0.002"):
            train(dataclasses.replace(cfg, lr=2e-3), mlflow_enabled=False)

    for checkpoint in (outcome.best_checkpoint, outcome.registered):
        out = tmp_path / "eval.json"
        assert main(["evaluate", "--router", router, "--checkpoint", checkpoint, "--data", str(tiny_dataset),
                     "--split", "test", "--json", str(out), "--no-mlflow"]) == 0
        result = json.loads(out.read_text())
        assert set(result["benchmarks"]) == {"GSM8K", "MBPP"}
        assert result["benchmarks"]["GSM8K"]["n"] == 10

    # the done-when: a folder in the release layout that training never saw, every split
    out = tmp_path / "unseen.json"
    assert main(["evaluate", "--router", router, "--checkpoint", outcome.best_checkpoint, "--data", str(samples_path),
                 "--split", "all", "--json", str(out), "--no-mlflow"]) == 0
    unseen = json.loads(out.read_text())["benchmarks"]
    assert set(unseen) == {"MT-Bench", "AlpacaEval", "ArenaHard"}
    assert all(0 < unseen[b]["n"] <= 3 and unseen[b]["score"] <= unseen[b]["oracle"] for b in unseen)


def test_evaluate_refuses_a_checkpoint_of_another_kind(ray_local, tiny_dataset, backbones, tmp_path, capsys):
    cfg = TrainConfig(router="mlc", dataset=str(tiny_dataset), backbone=backbones["bert"], max_prompt_len=16,
                      batch_size=8, max_steps=1, eval_every=1, storage_path=str(tmp_path / "runs"), register_as=None)
    outcome = train(cfg, mlflow_enabled=False)
    assert main(["evaluate", "--router", "lookahead-mlm", "--checkpoint", outcome.best_checkpoint,
                 "--data", str(tiny_dataset), "--no-mlflow"]) == 2
    assert "holds a 'mlc' router" in capsys.readouterr().err
