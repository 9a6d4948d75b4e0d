"""The plots of a Tune sweep's trials, logged into each trial's MLflow run: the curriculum's mask
rate against the step, the val score against the step, and the pick share on val of the trial's best
checkpoint (split out of tuning.py, which runs the sweep)."""

from __future__ import annotations

from lookahead_ray.config import TrainConfig
from lookahead_ray.curriculum import mask_rate

PLOTS = ("plots/curriculum.png", "plots/val_score.png", "plots/pick_share.png")


def log_trial_plots(client, row: dict, cfg: TrainConfig, steps: int, val_rows, filesystem) -> None:
    """Curriculum rate vs step, val score vs step and pick share on val, as PNGs in the trial's run."""
    run_id = row["run_id"]
    rates = metric_points(client, run_id, "mask_rate")
    c = cfg.curriculum  # the loop logs the rate optimizer step k used, mask_rate(k - 1), at step k
    planned = [(s + 1, mask_rate(s, steps, c.r0, c.warmup_ratio, c.shape) if cfg.router == "lookahead-mlm" else 1.0)
               for s in range(steps)]
    client.log_figure(run_id, line_figure({"schedule": planned, "logged": rates}, "mask rate",
                                          f"curriculum: {cfg.curriculum.shape}, r0={cfg.curriculum.r0:.2f}, "
                                          f"warmup {cfg.curriculum.warmup_ratio:.2f}"), PLOTS[0])
    scores = {key: metric_points(client, run_id, key) for key in ("val_score", "eval_label_acc")}
    client.log_figure(run_id, line_figure(scores, "val score", "val score vs step"), PLOTS[1])
    shares = pick_share(row["checkpoint"], val_rows, filesystem) if row["checkpoint"] else {}
    client.log_figure(run_id, bar_figure(shares, f"pick share on val (checkpoint of step {row['best_step']})"),
                      PLOTS[2])
    metrics = {f"pick_share/{name}": share for name, share in shares.items()}
    metrics |= {"tune/best": row["best"], "tune/evaluations": row["evaluations"],
                "tune/stopped_early": float(row["stopped_early"])}
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))


def metric_points(client, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of a metric's history, the last value of each step, in step order."""
    points = {m.step: m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.timestamp)}
    return sorted(points.items())


def pick_share(checkpoint: str, val_rows, filesystem=None) -> dict[str, float]:
    """Share of val prompts the checkpoint's router sends to each candidate (a checkpoint in a bucket is
    downloaded first: Ray's Checkpoint.as_directory)."""
    # heavy imports (Ray, torch): off the CLI's start-up path
    from ray.train import Checkpoint

    from lookahead_ray.routers.predictor import RouterPredictor

    with Checkpoint(checkpoint, filesystem=filesystem).as_directory() as directory:
        predictor = RouterPredictor.load(directory)
    picks, _ = predictor.route(list(val_rows["prompt"]))
    return {name: picks.count(name) / max(len(picks), 1) for name in predictor.candidates}


def line_figure(series: dict[str, list[tuple[int, float]]], ylabel: str, title: str):
    from matplotlib.figure import Figure  # heavy: off the CLI's start-up path

    figure = Figure(figsize=(6, 3.5))
    axes = figure.subplots()
    for label, points in series.items():
        if points:
            axes.plot(*zip(*points), marker="o" if len(points) < 30 else None, label=label,
                      linestyle="--" if label == "schedule" else "-")
    axes.set(xlabel="optimizer step", ylabel=ylabel, title=title)
    axes.legend()
    figure.tight_layout()
    return figure


def bar_figure(shares: dict[str, float], title: str):
    from matplotlib.figure import Figure  # heavy: off the CLI's start-up path

    figure = Figure(figsize=(6, 3.5))
    axes = figure.subplots()
    axes.barh(list(shares), list(shares.values()))
    axes.set(xlabel="share of val prompts", xlim=(0, 1), title=title)
    figure.tight_layout()
    return figure
