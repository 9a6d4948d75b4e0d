"""Per-task routing on held-out prompts: where a router sends each task, and how its answers score
next to each single candidate's. `make demo` prints this table as its proof that the router routes.

Unlike `evaluate`, which scores the seven replay benchmarks with their own metrics, this works on any
routing dataset (the demo's reasoning-gym and HumanEval prompts too): a task is a `benchmark` value,
and a candidate's accuracy on it is the mean of its graded scores (0/1 for math and code tests).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lookahead_ray.data import metrics as M
from lookahead_ray.evaluation.evaluate import choose
from lookahead_ray.evaluation.stats import bootstrap_interval


def heldout_rows(frame: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows of `split` ('test' is the part no router trained or selected on)."""
    rows = frame[frame["split"] == split].reset_index(drop=True)
    if rows.empty:
        present = sorted(frame["split"].unique())
        raise ValueError(f"--split {split!r}: the dataset has no rows in it (splits present: {present})")
    return rows


def task_entry(scores: np.ndarray, picks: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Pick shares, routed accuracy, each candidate's accuracy and the oracle's on one task's rows."""
    n = len(picks)
    singles = scores.mean(axis=0)
    return {
        "n": n,
        "pick_share": M.pick_share(M.one_hot(picks, len(names)), names),
        "routed": float(scores[np.arange(n), picks].mean()),
        "single": {name: float(singles[i]) for i, name in enumerate(names)},
        "best_single": float(singles.max()),
        "oracle": float(scores.max(axis=1).mean()),
    }


def versus_best_single(scores: np.ndarray, picks: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Routed minus the best single candidate over all rows, per row, with its 95 % paired-bootstrap
    interval (the replay report's `bootstrap_interval`, one seed): on a few dozen prompts a margin
    can be noise."""
    best = int(scores.mean(axis=0).argmax())
    diffs = scores[np.arange(len(picks)), picks] - scores[:, best]  # (N,) paired on the same prompts
    return {"candidate": names[best], **bootstrap_interval({"all": diffs[None, :]})["all"]}


def heldout_report(rows: pd.DataFrame, picks: np.ndarray, names: list[str]) -> dict[str, Any]:
    """One entry per task and one for all held-out rows together (`all`: one candidate for every task
    is the single-model baseline a user would otherwise deploy), and the routed margin over that
    baseline with its interval."""
    scores = np.stack(rows["scores"].to_numpy()).astype(float)  # (N, T)
    tasks = {}
    for task in sorted(rows["benchmark"].unique()):
        mask = (rows["benchmark"] == task).to_numpy()
        tasks[task] = task_entry(scores[mask], picks[mask], names)
    return {"candidates": names, "tasks": tasks, "all": task_entry(scores, picks, names),
            "vs_best_single": versus_best_single(scores, picks, names)}


def route_heldout(router, rows: pd.DataFrame, names: list[str]) -> dict[str, Any]:
    return heldout_report(rows, choose(router, rows), names)


def format_heldout(report: dict[str, Any]) -> str:
    """Task | n | pick share per candidate | routed accuracy | each candidate alone | oracle."""
    names = report["candidates"]
    width = max(len("task"), *(len(t) for t in report["tasks"]))
    share_head = " ".join(f"{'->' + n:>14}" for n in names)
    single_head = " ".join(f"{n:>14}" for n in names)
    header = f"{'task':<{width}} {'n':>4} {share_head} {'routed':>7} {single_head} {'oracle':>7}"
    lines = ["pick share (->candidate) and accuracy on held-out prompts; 'routed' is the router's accuracy,",
             "the candidate columns are each candidate answering every prompt alone", header, "-" * len(header)]
    for task, entry in [*report["tasks"].items(), ("all", report["all"])]:
        shares = " ".join(f"{entry['pick_share'][n]:>14.2f}" for n in names)
        singles = " ".join(f"{entry['single'][n]:>14.2f}" for n in names)
        lines.append(f"{task:<{width}} {entry['n']:>4} {shares} {entry['routed']:>7.2f} {singles} {entry['oracle']:>7.2f}")
    margin = report["vs_best_single"]
    lines.append(f"routed minus {margin['candidate']} alone (the best single candidate) on all {report['all']['n']} prompts: "
                 f"{margin['mean']:+.3f}, 95 % paired bootstrap [{margin['low']:+.3f}, {margin['high']:+.3f}]")
    return "\n".join(lines)
