"""Training and validation rows for the routers, from an imported dataset or a release folder.

The draw itself (tied rows, the per-source mix, the val sets that select) is `data/mix.py`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lookahead_ray.config import TrainConfig
from lookahead_ray.data.frames import load_frame
from lookahead_ray.data.labels import bce_targets, normalize_scores
from lookahead_ray.data.mix import draw_train, draw_val

COLUMNS = ["prompt", "responses", "labels", "normalized"]
VAL_COLUMNS = [*COLUMNS, "benchmark", "scores", "selects"]


def with_targets(rows: pd.DataFrame, cfg: TrainConfig, columns: list[str] = COLUMNS) -> pd.DataFrame:
    """Add per-prompt BCE `labels` and min-max `normalized` scores (both (T,) float lists)."""
    scores = np.stack(rows["scores"].to_numpy()) if len(rows) else np.zeros((0, len(cfg.data.candidates)))
    out = rows.copy()
    out["labels"] = list(bce_targets(scores, cfg.data.labels))
    out["normalized"] = list(normalize_scores(scores, cfg.data.labels))
    out["responses"] = [list(r) for r in out["responses"]]
    out["scores"] = [list(map(float, s)) for s in out["scores"]]
    return out[columns].reset_index(drop=True)


def restrict(frame: pd.DataFrame, cfg: TrainConfig) -> pd.DataFrame:
    """The rows of cfg.benchmarks (all when None); an unknown name is an error."""
    if cfg.benchmarks is None:
        return frame
    unknown = sorted(set(cfg.benchmarks) - set(frame["benchmark"]))
    if unknown:
        raise ValueError(f"benchmarks: {unknown} not in {cfg.dataset} (has {sorted(set(frame['benchmark']))})")
    return frame[frame["benchmark"].isin(cfg.benchmarks)]


def split_rows(cfg: TrainConfig, frame: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(all rows of the dataset, train sample, val rows) before targets are added."""
    if frame is None:
        frame = load_frame(cfg.dataset, cfg.data)
    frame = restrict(frame, cfg)
    train_pool, val_pool = frame[frame["split"] == "train"], frame[frame["split"] == "val"]
    if train_pool.empty or val_pool.empty:
        raise ValueError(f"{cfg.dataset}: need train and val rows, found {len(train_pool)} and {len(val_pool)}")
    return frame, draw_train(train_pool, cfg), draw_val(val_pool, cfg)


def training_frames(cfg: TrainConfig, frame: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, val) rows with targets; train drawn by the mix and shuffled with the config's seed;
    val carries `benchmark`, raw `scores` and `selects` for the per-benchmark selection score."""
    _, train, val = split_rows(cfg, frame)
    return with_targets(train, cfg), with_targets(val, cfg, VAL_COLUMNS)
