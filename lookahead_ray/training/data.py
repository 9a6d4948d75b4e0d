"""Training and validation rows for the routers, from an imported dataset or a release folder."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lookahead_ray.config import TrainConfig
from lookahead_ray.data.labels import bce_targets, normalize_scores

COLUMNS = ["prompt", "responses", "labels", "normalized"]


def with_targets(rows: pd.DataFrame, cfg: TrainConfig) -> pd.DataFrame:
    """Add per-prompt BCE `labels` and min-max `normalized` scores (both (T,) float lists)."""
    scores = np.stack(rows["scores"].to_numpy()) if len(rows) else np.zeros((0, len(cfg.data.candidates)))
    out = rows.copy()
    out["labels"] = list(bce_targets(scores, cfg.data.labels))
    out["normalized"] = list(normalize_scores(scores, cfg.data.labels))
    out["responses"] = [list(r) for r in out["responses"]]
    return out[COLUMNS].reset_index(drop=True)


def _subsample(rows: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    if limit is None or len(rows) <= limit:
        return rows
    return rows.sample(n=limit, random_state=seed)


def training_frames(cfg: TrainConfig, frame: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, val) rows with targets; train shuffled with the config's seed."""
    if frame is None:
        from lookahead_ray.evaluation.evaluate import load_frame

        frame = load_frame(cfg.dataset, cfg.data)
    if cfg.benchmarks is not None:
        unknown = sorted(set(cfg.benchmarks) - set(frame["benchmark"]))
        if unknown:
            raise ValueError(f"benchmarks: {unknown} not in {cfg.dataset} (has {sorted(set(frame['benchmark']))})")
        frame = frame[frame["benchmark"].isin(cfg.benchmarks)]
    train = _subsample(frame[frame["split"] == "train"], cfg.max_train_samples, cfg.seed)
    val = _subsample(frame[frame["split"] == "val"], cfg.max_val_samples, cfg.seed)
    if train.empty or val.empty:
        raise ValueError(f"{cfg.dataset}: need train and val rows, found {len(train)} and {len(val)}")
    train = train.sample(frac=1.0, random_state=cfg.seed)
    return with_targets(train, cfg), with_targets(val, cfg)
