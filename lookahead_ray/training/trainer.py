"""`build_trainer(cfg)` -> a Ray Train TorchTrainer; `train(cfg)` runs it and records it in MLflow.

Tune reuses `build_trainer` unchanged (a Tune function that builds and fits it, as Train V2 wants).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lookahead_ray.config import TrainConfig, to_dict
from lookahead_ray.training.checkpoint import RouterSpec
from lookahead_ray.training.data import training_frames
from lookahead_ray.training.loop import total_steps, train_loop_per_worker

log = logging.getLogger(__name__)


def loop_config(cfg: TrainConfig, n_train: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The plain-dict config each worker receives."""
    spec = dataclasses.asdict(RouterSpec.from_train_config(cfg))
    return {"train": to_dict(cfg), "spec": spec, "total_steps": total_steps(n_train, cfg), **(extra or {})}


def build_trainer(cfg: TrainConfig, train: pd.DataFrame | None = None, val: pd.DataFrame | None = None,
                  extra: dict[str, Any] | None = None):
    """A TorchTrainer for `cfg` over the train/val rows (loaded from cfg.dataset when not given)."""
    import ray.data
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if train is None or val is None:
        train, val = training_frames(cfg)
    resources = {"CPU": cfg.cpus_per_worker}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config(cfg, len(train), extra),
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker=resources),
        datasets={"train": ray.data.from_pandas(train), "val": ray.data.from_pandas(val)},
        run_config=RunConfig(
            name=cfg.name or f"{cfg.router}",
            storage_path=str(Path(cfg.storage_path).resolve()),
            checkpoint_config=CheckpointConfig(num_to_keep=3, checkpoint_score_attribute="eval_reward",
                                               checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
        ),
    )


@dataclass
class TrainOutcome:
    best_checkpoint: str
    best_metrics: dict[str, Any]
    mlflow_run_id: str | None
    registered: str | None


def train(cfg: TrainConfig, mlflow_enabled: bool = True, extra: dict[str, Any] | None = None) -> TrainOutcome:
    """Fit one router on Ray Train; log the run, its best checkpoint and model version to MLflow."""
    train_rows, val_rows = training_frames(cfg)
    print(f"[train] {cfg.router}: {len(train_rows)} train / {len(val_rows)} val prompts, "
          f"{total_steps(len(train_rows), cfg)} optimizer steps on {cfg.num_workers} worker(s)", flush=True)
    run_id = uri = None
    if mlflow_enabled:
        from lookahead_ray.tracking import start_training_run, tracking_uri

        uri = tracking_uri()
        run_id = start_training_run(cfg)
    extra = {**(extra or {}), "mlflow_run_id": run_id, "mlflow_uri": uri}
    result = build_trainer(cfg, train_rows, val_rows, extra).fit()
    if result.error is not None:
        raise result.error
    best = result.get_best_checkpoint("eval_reward", "max") or result.checkpoint
    metrics = next((m for c, m in (result.best_checkpoints or []) if c.path == best.path), result.metrics)
    registered = None
    if mlflow_enabled:
        from lookahead_ray.tracking import finish_training_run

        registered = finish_training_run(run_id, best.path, metrics, cfg)
    print(f"[train] best checkpoint {best.path} (eval_reward {metrics.get('eval_reward', float('nan')):.4f})", flush=True)
    return TrainOutcome(best.path, dict(metrics), run_id, registered)
