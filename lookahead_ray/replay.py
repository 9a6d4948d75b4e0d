"""The replay benchmark: train MLC, Lookahead-MLM and Lookahead-CLM on the replay train split of
the release, evaluate them and the baselines on its test split, and write JSON, Markdown and a PNG.

    lookahead-ray bench replay --data ../shared/data/lookahead-release [--seeds 3] [--full]
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from lookahead_ray.config import DataConfig, load_train_config
from lookahead_ray.evaluation.evaluate import evaluate, load_frame
from lookahead_ray.evaluation.frontier import format_frontier, frontier_for, plot_frontier
from lookahead_ray.evaluation.stats import comparisons, interval_table

TRAINED = ("mlc", "lookahead-mlm", "lookahead-clm")
TIME_FILE = "replay_train_seconds.json"
BASELINES = ("oracle", "best-single", "random", "knn")
ACCURACY_SETS = ("GSM8K", "MATH", "HumanEval", "MBPP")
CONFIG_FILES = {"mlc": "replay-mlc", "lookahead-mlm": "replay-mlm", "lookahead-clm": "replay-clm"}


def config_path(router: str, full: bool, config_dir: Path) -> Path:
    return config_dir / f"{CONFIG_FILES[router]}-{'gpu' if full else 'cpu'}.yaml"


def mean_normalized(result: dict[str, Any]) -> float:
    """The average normalised score over the accuracy benchmarks present (the issue's target)."""
    values = [result["benchmarks"][b]["normalized"] for b in ACCURACY_SETS if b in result["benchmarks"]]
    return float(np.mean(values))


def single_correct_margin(result: dict[str, Any]) -> dict[str, float]:
    """Wins and losses vs best-single on queries where exactly one candidate is correct, pooled."""
    wins = losses = n = 0.0
    for b in ACCURACY_SETS:
        if b in result["benchmarks"]:
            bucket = result["benchmarks"][b]["margin_vs_best_single"]["1"]
            wins, losses, n = wins + bucket["wins"], losses + bucket["losses"], n + bucket["n"]
    return {"n": n, "wins": wins, "losses": losses, "margin": (wins - losses) / n if n else 0.0}


def train_one(router: str, seed: int, data: str, full: bool, config_dir: Path, runs: Path,
              mlflow_enabled: bool) -> tuple[str, float, float]:
    """Train one router for one seed; returns (best checkpoint path, seconds, the val_score that selected it)."""
    from lookahead_ray.training.trainer import train  # heavy (mlflow, Ray Train): only when routers are trained

    path = config_path(router, full, config_dir)
    # The run folder is keyed by seed and config: a rerun of the same config resumes from its
    # checkpoints (Ray Train restores a run folder it finds), a changed config starts afresh.
    digest = hashlib.sha256(f"{path.read_text()}\x00{data}".encode()).hexdigest()[:8]
    cfg = load_train_config(path, dataset=data, seed=seed, storage_path=str(runs / router),
                            name=f"seed{seed}-{digest}")
    start = time.perf_counter()
    outcome = train(cfg, mlflow_enabled=mlflow_enabled)
    took = recorded_seconds(runs / router / cfg.name, time.perf_counter() - start)
    return outcome.best_checkpoint, took, float(outcome.best_metrics.get("val_score", float("nan")))


def recorded_seconds(run_dir: Path, took: float) -> float:
    """The training time of a run folder: the first run that finished it records its time, and a
    rerun that only resumed the finished run reports that time rather than its own few seconds."""
    record = run_dir / TIME_FILE
    if record.is_file():
        return float(json.loads(record.read_text())["train_seconds"])
    record.write_text(json.dumps({"train_seconds": took}) + "\n")
    return took


def pooled_margin(margins: list[dict[str, float]]) -> dict[str, float]:
    """Single-correct wins and losses summed over seeds."""
    n, wins, losses = (sum(m[key] for m in margins) for key in ("n", "wins", "losses"))
    return {"n": n, "wins": wins, "losses": losses, "margin": (wins - losses) / n if n else 0.0}


def summarize(trained: dict[str, list[dict]], baselines: dict[str, dict]) -> dict[str, Any]:
    """Per router: mean and std of the average normalised score over seeds, gap to oracle,
    margins vs MLC, and the single-correct margin vs best-single."""
    summary: dict[str, Any] = {}
    for router, results in trained.items():
        scores = [mean_normalized(r) for r in results]
        summary[router] = {
            "avg_normalized_mean": float(np.mean(scores)),
            "avg_normalized_std": float(np.std(scores)),
            "gap_to_oracle": float(1.0 - np.mean(scores)),
            "beats_random": bool(np.mean(scores) > 0.0),
            "single_correct_margin": pooled_margin([single_correct_margin(r) for r in results]),
        }
    if "mlc" in trained:
        mlc = np.array([mean_normalized(r) for r in trained["mlc"]])
        for router in ("lookahead-mlm", "lookahead-clm"):
            if router in trained:
                diff = np.array([mean_normalized(r) for r in trained[router]]) - mlc
                summary[router]["margin_vs_mlc_mean"] = float(diff.mean())
                summary[router]["margin_vs_mlc_std"] = float(diff.std())
                summary[router]["beats_mlc"] = bool(diff.mean() > 0.0)
    for name, result in baselines.items():
        summary[name] = {"avg_normalized_mean": mean_normalized(result), "gap_to_oracle": 1.0 - mean_normalized(result)}
    return summary


def markdown_table(trained: dict[str, list[dict]], baselines: dict[str, dict], summary: dict[str, Any]) -> str:
    """Normalised score per benchmark (mean over seeds) per router, with the average and its std."""
    rows = {**{k: [v] for k, v in baselines.items()}, **trained}
    benchmarks = [b for b in ACCURACY_SETS if b in next(iter(rows.values()))[0]["benchmarks"]]
    lines = ["| router | " + " | ".join(benchmarks) + " | avg normalised | ± std (seeds) |",
             "|---|" + "---:|" * (len(benchmarks) + 2)]
    for router, results in rows.items():
        cells = [f"{np.mean([r['benchmarks'][b]['normalized'] for r in results]):.3f}" for b in benchmarks]
        std = summary[router].get("avg_normalized_std")
        lines.append(f"| {router} | " + " | ".join(cells) +
                     f" | {summary[router]['avg_normalized_mean']:.3f} | {'' if std is None else f'{std:.3f}'} |")
    return "\n".join(lines)


def margin_table(summary: dict[str, Any], result: dict[str, Any]) -> str:
    """Per trained router: margin vs MLC over seeds, gap to oracle, the single-correct record vs
    best-single (pooled over seeds), and the training minutes of each seed."""
    lines = ["| router | vs MLC (mean ± std over seeds) | gap to oracle | only one candidate right: wins–losses vs "
             "best-single (margin) | train minutes per seed |", "|---|---:|---:|---:|---:|"]
    for router, seconds in result["train_seconds"].items():
        if router not in summary:
            continue
        row = summary[router]
        versus = (f"{row['margin_vs_mlc_mean']:+.3f} ± {row['margin_vs_mlc_std']:.3f}"
                  if "margin_vs_mlc_mean" in row else "")
        single = row["single_correct_margin"]
        minutes = ", ".join(f"{s / 60:.0f}" for s in seconds)
        lines.append(f"| {router} | {versus} | {row['gap_to_oracle']:.3f} | {single['wins']:.0f}–{single['losses']:.0f} "
                     f"({single['margin']:+.3f}) | {minutes} |")
    return "\n".join(lines)


def bar_chart(trained: dict[str, list[dict]], baselines: dict[str, dict], path: Path) -> Path:
    import matplotlib  # heavy: only when the chart is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: as matplotlib above

    rows = {**{k: [v] for k, v in baselines.items() if k != "oracle"}, **trained}
    benchmarks = [b for b in ACCURACY_SETS if b in next(iter(rows.values()))[0]["benchmarks"]]
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(9, 4))
    for i, (router, results) in enumerate(rows.items()):
        values = [np.mean([r["benchmarks"][b]["normalized"] for r in results]) for b in benchmarks]
        ax.bar(np.arange(len(benchmarks)) + i * width, values, width, label=router)
    ax.set_xticks(np.arange(len(benchmarks)) + width * (len(rows) - 1) / 2, benchmarks)
    ax.set_ylabel("normalised score (random 0, oracle 1)")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.legend(fontsize=8, ncol=3)
    ax.set_title("Replay benchmark: test split of the shared release")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(out: Path, result: dict[str, Any]) -> str:
    """replay.json, replay.md and replay.png from what has finished so far; returns the table."""
    trained = {r: v for r, v in result["trained"].items() if v}
    summary = summarize(trained, result["baselines"])
    result["summary"] = summary
    result["intervals"] = comparisons(trained, result["baselines"])
    (out / "replay.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown_table(trained, result["baselines"], summary) + "\n\n" + margin_table(summary, result)
    if result["intervals"]:
        table += ("\n\nPaired bootstrap over queries and seeds (2,000 replicates; * the 95 % interval excludes 0; "
                  "collapsed: one candidate gets > 90 % of every benchmark's queries):\n\n"
                  + interval_table(result["intervals"]))
    (out / "replay.md").write_text(f"`{result['command']}`\n\n{table}\n")
    bar_chart(trained, result["baselines"], out / "replay.png")
    return table


def run_replay(data: str, seeds: int = 1, full: bool = False, out_dir: str = "benchmarks/results",
               runs_dir: str = "runs/replay", config_dir: str = "configs", routers: tuple[str, ...] = TRAINED,
               mlflow_enabled: bool = True, command: str = "", seed_list: tuple[int, ...] = (),
               frontier: bool = True) -> dict[str, Any]:
    """Evaluate the baselines, then train and evaluate every router for every seed on the test
    split; the outputs are rewritten after each router, so a long run can be read as it goes.
    `frontier`: also score the first seed's routers along the cost axis (minutes per router)."""
    out, runs, configs = Path(out_dir), Path(runs_dir), Path(config_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = load_frame(data, DataConfig())
    result: dict[str, Any] = {"command": command, "data": data, "seeds": list(seed_list or range(seeds)), "full": full,
                              "configs": {r: str(config_path(r, full, configs)) for r in routers},
                              "best_checkpoints": {r: [] for r in routers}, "best_val_score": {r: [] for r in routers},
                              "train_seconds": {r: [] for r in routers},
                              "summary": {}, "trained": {r: [] for r in routers}, "baselines": {}}
    for name in BASELINES:
        print(f"[replay] evaluating baseline {name}", flush=True)
        result["baselines"][name] = evaluate(name, frame, "test")
    for seed in seed_list or range(seeds):
        for router in routers:
            print(f"[replay] seed {seed}: training {router}", flush=True)
            checkpoint, took, val_score = train_one(router, seed, data, full, configs, runs, mlflow_enabled)
            result["best_checkpoints"][router].append(checkpoint)
            result["best_val_score"][router].append(val_score)
            result["train_seconds"][router].append(took)
            print(f"[replay] seed {seed}: evaluating {router} ({took / 60:.1f} min to train)", flush=True)
            result["trained"][router].append(cached_evaluation(router, frame, data, checkpoint))
            write_outputs(out, result)
    table = write_outputs(out, result)
    print(table)
    print(f"[replay] wrote {out / 'replay.json'}, {out / 'replay.md'}, {out / 'replay.png'}")
    if frontier:
        write_frontier(out, frame, result)
    return result


def write_frontier(out: Path, frame, result: dict[str, Any]) -> dict[str, Any] | None:
    """The quality-cost frontier of the first seed's trained routers (and best-single, oracle) on the
    test split, next to the quality table: frontier.json / .md / .png in `out`."""
    routers = {r: {"router": r, "checkpoint": paths[0]} for r, paths in result["best_checkpoints"].items() if paths}
    if not routers:
        return None
    print("[replay] quality-cost frontier of the first seed's routers", flush=True)
    frontier = frontier_for(frame, {**routers, "best-single": {}, "oracle": {}}, "test")
    (out / "frontier.json").write_text(json.dumps(frontier, indent=2) + "\n")
    table = format_frontier(frontier)
    (out / "frontier.md").write_text(f"`{result['command']}` (seed {result['seeds'][0]}'s checkpoints)\n\n"
                                     f"```\n{table}\n```\n")
    plot_frontier(frontier, out / "frontier.png")
    print(table)
    return frontier


def cached_evaluation(router: str, frame, data: str, checkpoint: str) -> dict[str, Any]:
    """The test evaluation of a checkpoint, kept in its folder keyed by the weights and the data:
    a rerun of `bench replay` over finished runs reads it back instead of scoring again (minutes each)."""
    weights = Path(checkpoint) / "model.pt"
    stat = weights.stat()
    key = hashlib.sha256(f"{router}\x00{data}\x00{len(frame)}\x00{stat.st_size}\x00{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    cache = Path(checkpoint) / f"evaluation-test-{key}.json"
    if cache.is_file():
        print(f"[replay] {router}: evaluation read from {cache}", flush=True)
        return json.loads(cache.read_text())
    result = evaluate(router, frame, "test", options={"checkpoint": checkpoint})
    cache.write_text(json.dumps(result) + "\n")
    return result


def seeds_of(result: dict[str, Any]) -> list[int]:
    """The seeds a replay.json holds, in list order: `seeds` is a list, or a count run from 0."""
    seeds = result["seeds"]
    return list(seeds) if isinstance(seeds, list) else list(range(seeds))


def merge_replays(paths: list[str], out_dir: str, command: str = "",
                  routers: tuple[str, ...] = TRAINED) -> dict[str, Any]:
    """One replay.json/.md/.png from several runs of the benchmark (for example seeds split over
    processes with --seed-list): per router, the results of each seed, the first file's wins. Only
    seeds with a result for every router are kept (the others are listed in `left_out`)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    for path, part in zip(paths, parts):
        if part["data"] != parts[0]["data"] or part["full"] != parts[0]["full"]:
            raise ValueError(f"{path}: another dataset or setting than {paths[0]} ({part['data']}, full={part['full']})")
    by_seed: dict[str, dict[int, tuple]] = {}
    for part in parts:
        for router, results in part["trained"].items():
            if router not in routers:
                continue
            # best_val_score is absent from files written before it was recorded: None per seed
            vals = part.get("best_val_score", {}).get(router, [None] * len(results))
            for seed, result, seconds, best, val in zip(seeds_of(part), results, part["train_seconds"][router],
                                                        part["best_checkpoints"][router], vals):
                by_seed.setdefault(router, {}).setdefault(seed, (result, seconds, best, val))
    routers = [r for r in TRAINED if r in by_seed]
    every = sorted({seed for runs in by_seed.values() for seed in runs})
    seeds = [s for s in every if all(s in by_seed[r] for r in routers)]  # margins pair routers by seed
    left_out = [f"{r} seed {s}" for r in routers for s in every if s not in seeds and s in by_seed[r]]
    if not seeds:
        raise ValueError("no seed has a result for every router")
    if left_out:
        print(f"[replay] left out (their seed lacks another router's result): {', '.join(left_out)}")
    result = {"command": command, "data": parts[0]["data"], "seeds": seeds, "full": parts[0]["full"],
              "left_out": left_out,
              "merged_from": [part["command"] for part in parts],
              "configs": {r: next(p["configs"][r] for p in parts if r in p["configs"]) for r in routers},
              "best_checkpoints": {r: [by_seed[r][s][2] for s in seeds] for r in routers},
              "best_val_score": {r: [by_seed[r][s][3] for s in seeds] for r in routers},
              "train_seconds": {r: [by_seed[r][s][1] for s in seeds] for r in routers},
              "summary": {}, "trained": {r: [by_seed[r][s][0] for s in seeds] for r in routers},
              "baselines": parts[0]["baselines"]}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(write_outputs(out, result))
    return result
