"""`build_trainer(cfg)` -> a Ray Train TorchTrainer; `train(cfg)` runs it and records it in MLflow.

Tune reuses `build_trainer` unchanged (a Tune function that builds and fits it, as Train V2 wants).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Param

from lookahead_ray.config import TrainConfig, to_dict
from lookahead_ray.data.mix import label_prior
from lookahead_ray.registry import register_router
from lookahead_ray.storage import check_reachable, check_shared, is_uri, join, ray_storage, read_text, write_text
from lookahead_ray.routers.checkpoint import RouterSpec
from lookahead_ray.tracking import check_tracking, start_training_run, tracking_uri
from lookahead_ray.training.data import training_frames
from lookahead_ray.training.loop import total_steps, train_loop_per_worker

log = logging.getLogger(__name__)


RUN_CONFIG = "lookahead-train-config.json"
"""Beside Ray Train's own files in <storage_path>/<name>/: the config the run was started with."""
BOOKKEEPING = ("name", "storage_path", "experiment", "register_as", "max_failures")
"""Fields that say where a run is kept or recorded, not what it trains: a rerun may change them."""

SELECT_METRIC = "val_score"
"""What picks the best checkpoint: the mean per-benchmark normalised score on val (training/selection.py)."""


def loop_config(cfg: TrainConfig, train: pd.DataFrame, val: pd.DataFrame,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The plain-dict config each worker receives: the config, the router spec, the step count and
    the val benchmarks (all, in one order for the all-reduce; and the ones that select)."""
    spec = dataclasses.asdict(RouterSpec.from_train_config(cfg))
    selecting = sorted(set(val.loc[val["selects"], "benchmark"]))
    return {"train": to_dict(cfg), "spec": spec, "total_steps": total_steps(len(train), cfg),
            "val_benchmarks": sorted(set(val["benchmark"])), "selecting": selecting, **(extra or {})}


def build_trainer(cfg: TrainConfig, train: pd.DataFrame | None = None, val: pd.DataFrame | None = None,
                  extra: dict[str, Any] | None = None):
    """A TorchTrainer for `cfg` over the train/val rows (loaded from cfg.dataset when not given)."""
    # heavy imports: Ray only when a trainer is built
    import ray.data
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if train is None or val is None:
        train, val = training_frames(cfg)
    resources = {"CPU": cfg.cpus_per_worker}
    # Train V2 tees every worker print to stdout and to the root logger, so the driver showed each
    # progress line twice; the workers print their own progress lines, once. Train propagates this
    # variable from the driver to its controller and workers at fit().
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config(cfg, train, val, extra),
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker=resources),
        datasets={"train": ray.data.from_pandas(train), "val": ray.data.from_pandas(val)},
        run_config=RunConfig(
            name=run_name(cfg),
            **ray_storage(cfg.storage_path),  # a local path, or s3:// / gs:// with its filesystem
            checkpoint_config=CheckpointConfig(num_to_keep=3, checkpoint_score_attribute=SELECT_METRIC,
                                               checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
        ),
    )


def check_start(cfg: TrainConfig, mlflow_enabled: bool) -> None:
    """Fail before any training if the run could not finish: storage unreachable or node-local on a
    multi-node cluster, or an MLflow tracking URI the workers cannot log to (needs a connected Ray)."""
    check_reachable(cfg.storage_path, "storage_path")
    check_shared(cfg.storage_path, "storage_path")
    if mlflow_enabled:
        check_tracking()


def run_name(cfg: TrainConfig) -> str:
    return cfg.name or cfg.router


def flat_config(cfg: TrainConfig) -> dict[str, Any]:
    """The config as dotted keys with JSON values (tuples as lists), bookkeeping fields left out."""
    def walk(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out = {}
        for key, value in values.items():
            out.update(walk(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
        return out

    values = json.loads(json.dumps(to_dict(cfg), default=str))  # one form for a fresh and a stored config
    return {k: v for k, v in walk(values).items() if k not in BOOKKEEPING}


def check_same_config(cfg: TrainConfig) -> None:
    """Ray Train resumes a run with the same name and storage: a finished run comes back as it is and a
    crashed one goes on from its last checkpoint. That is right only for the config the run started
    with, so the first start records it beside the run and a later start with other values is refused,
    naming the folder and the fields (a silent resume would return the old router as if it were new)."""
    folder = join(cfg.storage_path, run_name(cfg))
    location = join(folder, RUN_CONFIG)
    new = flat_config(cfg)
    text = read_text(location, "storage_path")
    if text is None:  # a new run, or one started before this record existed: record it now
        write_text(location, json.dumps(new, indent=1, sort_keys=True) + "\n", "storage_path")
        return
    old = json.loads(text)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:8])
        more = f" and {len(changed) - 8} more" if len(changed) > 8 else ""
        raise ValueError(f"{folder} holds a run started with another config ({shown}{more}; recorded in {RUN_CONFIG}); "
                         "Ray Train would resume that run, not train this one. Give this run another `name` or "
                         "`storage_path`, or move that folder away")


@dataclass
class TrainOutcome:
    best_checkpoint: str
    best_metrics: dict[str, Any]
    mlflow_run_id: str | None
    registered: str | None


def train(cfg: TrainConfig, mlflow_enabled: bool = True, extra: dict[str, Any] | None = None) -> TrainOutcome:
    """Fit one router on Ray Train; log the run, its best checkpoint and model version to MLflow."""
    check_start(cfg, mlflow_enabled)
    check_same_config(cfg)
    train_rows, val_rows = training_frames(cfg)
    steps = total_steps(len(train_rows), cfg)
    prior = label_prior(np.stack(train_rows["labels"].to_numpy()), tuple(cfg.data.candidates))
    print(f"[train] {cfg.router}: {len(train_rows)} train / {len(val_rows)} val prompts "
          f"(selecting: {', '.join(sorted(set(val_rows.loc[val_rows['selects'], 'benchmark'])))}), {steps} "
          f"optimizer steps, {steps // cfg.evaluation_interval(steps)} evaluations, on {cfg.num_workers} worker(s)",
          flush=True)
    print("[train] label prior of the train sample: " + ", ".join(f"{k} {v:.3f}" for k, v in prior.items()), flush=True)
    run_id = uri = None
    if mlflow_enabled:
        uri = tracking_uri()
        run_id = start_training_run(cfg)
        # The positive-label share per candidate of the rows actually trained on: the score of a
        # router that ignores the prompt, so a collapsed run reads off against it.
        mlflow.MlflowClient(uri).log_batch(run_id, params=[Param(f"label_prior.{k}", f"{v:.4f}") for k, v in prior.items()])
    extra = {**(extra or {}), "mlflow_run_id": run_id, "mlflow_uri": uri}
    result = build_trainer(cfg, train_rows, val_rows, extra).fit()
    if result.error is not None:
        raise result.error
    best = result.get_best_checkpoint(SELECT_METRIC, "max") or result.checkpoint
    metrics = next((m for c, m in (result.best_checkpoints or []) if c.path == best.path), result.metrics)
    registered = None
    if mlflow_enabled:
        with best.as_directory() as directory:  # a checkpoint in a bucket is downloaded for MLflow
            registered = register_router(run_id, directory, metrics, cfg)
    print(f"[train] best checkpoint {best.path} ({SELECT_METRIC} {metrics.get(SELECT_METRIC, float('nan')):.4f} "
          f"± {metrics.get('val_score_se', float('nan')):.4f})", flush=True)
    return TrainOutcome(checkpoint_location(cfg.storage_path, best.path), dict(metrics), run_id, registered)


def checkpoint_location(storage_path: str, path: str) -> str:
    """A checkpoint's path as the user can open it again: `s3://bucket/...` when storage is a URI."""
    return f"{urlsplit(storage_path).scheme}://{path}" if is_uri(storage_path) else path
