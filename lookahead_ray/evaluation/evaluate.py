"""Evaluate a router on a routing dataset or a release folder, benchmark by benchmark.

Rows evaluated: the `test` split, with split="val" the test benchmarks' val rows (to compare recipes
without touching test), or with split="all" every query of the test benchmarks.
Rows a router may fit on (best-single, kNN): the `train` split; with split="all", the training
sets' train rows (the test benchmarks have none left). best-single is chosen per benchmark on that
benchmark's fit rows, or, where there are none, on the evaluated rows (the usual "best single
model" reference); the JSON says which.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lookahead_ray.config import DataConfig
from lookahead_ray.data.frames import dataset_config, load_frame  # noqa: F401  (the CLI and replay load here too)
from lookahead_ray.data.schema import TEST_BENCHMARKS
from lookahead_ray.data import metrics as M
from lookahead_ray.registry import resolve_checkpoint
from lookahead_ray.routers.base import route
from lookahead_ray.routers.baselines import (
    BestSingleRouter,
    FixedRouter,
    KNNRouter,
    OracleRouter,
    RandomRouter,
    best_candidate,
)
from lookahead_ray.routers.checkpoint import read_spec
from lookahead_ray.routers.embeddings import SentenceEncoder
from lookahead_ray.routers.predictor import RouterPredictor

log = logging.getLogger(__name__)

BASELINE_NAMES = ("oracle", "random", "best-single", "knn", "fixed-<i>")
TRAINED_NAMES = ("mlc", "lookahead-mlm", "lookahead-clm")


def select_rows(frame: pd.DataFrame, split: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows to evaluate, rows a router may fit on)."""
    tests = frame["benchmark"].isin(TEST_BENCHMARKS)
    if split in ("test", "val"):
        evaluated, fit = frame[tests & (frame["split"] == split)], frame[frame["split"] == "train"]
    elif split == "all":
        evaluated, fit = frame[tests], frame[~tests & (frame["split"] == "train")]
    else:
        raise ValueError(f"--split must be 'test', 'val' or 'all', got {split!r}")
    if evaluated.empty:
        raise ValueError(f"no rows of the seven test benchmarks in split {split!r}")
    return evaluated.reset_index(drop=True), fit.reset_index(drop=True)


def fit_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of a --fit-data set that kNN and best-single may fit on: its train split, or every
    row when it has none (a folder of other queries altogether)."""
    train = frame[frame["split"] == "train"]
    return (train if len(train) else frame).reset_index(drop=True)


def best_single_choices(evaluated: pd.DataFrame, fit: pd.DataFrame) -> dict[str, tuple[int, str]]:
    """Per evaluated benchmark: (best candidate, 'train' or 'eval': the rows it was chosen on)."""
    out = {}
    for benchmark, rows in evaluated.groupby("benchmark", sort=False):
        fit_rows = fit[fit["benchmark"] == benchmark]
        out[benchmark] = (best_candidate(fit_rows, benchmark), "train") if len(fit_rows) else (best_candidate(rows, benchmark), "eval")
    return out


def build_router(name: str, n_candidates: int, fit: pd.DataFrame, best: dict[str, tuple[int, str]],
                 options: dict[str, Any]):
    if name in TRAINED_NAMES:
        return trained_router(name, n_candidates, options)
    if options.get("checkpoint"):
        raise ValueError(f"--checkpoint: router {name!r} is a baseline and takes no checkpoint")
    if name == "oracle":
        return OracleRouter(n_candidates)
    if name == "random":
        return RandomRouter(n_candidates, seed=options.get("seed", 0))
    if name == "best-single":
        return BestSingleRouter(n_candidates, {b: index for b, (index, _) in best.items()})
    if name == "knn":
        encoder = SentenceEncoder(options.get("encoder"))
        return KNNRouter(n_candidates, fit, encoder, k=options.get("k", 10))
    if name.startswith("fixed-"):
        try:
            index = int(name.removeprefix("fixed-"))
        except ValueError:
            raise ValueError(f"--router {name}: expected fixed-<index>, e.g. fixed-0") from None
        return FixedRouter(n_candidates, index)
    raise ValueError(f"--router {name!r}: unknown router; choose from {', '.join(BASELINE_NAMES + TRAINED_NAMES)}")


def trained_router(name: str, n_candidates: int, options: dict[str, Any]):
    """A trained router from --checkpoint (a folder or models:/<name>/<version>)."""
    source = options.get("checkpoint")
    if not source:
        raise ValueError(f"--router {name}: needs --checkpoint (a folder or models:/<name>/<version>)")
    local = resolve_checkpoint(source)
    spec = read_spec(local)
    if spec.kind != name:
        raise ValueError(f"--checkpoint {source}: holds a {spec.kind!r} router, not {name!r}")
    if len(spec.candidates) != n_candidates or list(spec.candidates) != list(options.get("candidates", spec.candidates)):
        raise ValueError(f"--checkpoint {source}: trained for candidates {list(spec.candidates)}, "
                         f"the data has {options.get('candidates')}")
    return RouterPredictor.load(local)


def as_batch(rows: pd.DataFrame) -> dict[str, list]:
    return {column: rows[column].tolist() for column in ("prompt_id", "benchmark", "prompt", "scores")}


def choose(router, rows: pd.DataFrame, batch_size: int = 256) -> np.ndarray:
    """The router's pick for every row, (N,)."""
    picks = []
    for start in range(0, len(rows), batch_size):
        picks.append(route(router.score(as_batch(rows.iloc[start : start + batch_size]))).numpy())
    return np.concatenate(picks)


def benchmark_entry(benchmark: str, rows: pd.DataFrame, picks: np.ndarray, best: int, best_source: str,
                    names: list[str], config: DataConfig) -> dict[str, Any]:
    scores = np.stack(rows["scores"].to_numpy())  # (N, T)
    aux = M.parse_aux(rows["aux"].tolist())
    n, t = scores.shape
    metric = M.metric_for(benchmark)
    chosen = M.one_hot(picks, t)
    uniform = np.full((n, t), 1.0 / t)
    oracle_picks = scores.argmax(axis=1)
    entry = {
        "score": metric(scores, chosen, aux),
        "n": n,
        "oracle": metric(scores, M.one_hot(oracle_picks, t), aux),
        "random": metric(scores, uniform, aux),
        "best_single": metric(scores, M.one_hot(np.full(n, best), t), aux),
        "best_single_candidate": names[best],
        "best_single_fit": best_source,
    }
    entry["normalized"] = M.normalized(entry["score"], entry["random"], entry["oracle"])
    entry["routing_accuracy"] = M.routing_accuracy(scores, chosen)
    entry["pick_share"] = M.pick_share(chosen, names)
    correct = M.n_correct(benchmark, scores, config.labels)
    entry["margin_vs_best_single"] = M.margin_by_correct(scores, chosen, np.full(n, best), correct)
    entry["picked"] = scores[np.arange(n), picks].tolist()  # per-query raw score: paired bootstrap (stats.py)
    return entry


def evaluate(router_name: str, frame: pd.DataFrame, split: str = "test", config: DataConfig = DataConfig(),
             options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate one router on a loaded frame (see `load_frame`); returns the result dict."""
    options = options or {}
    evaluated, fit = select_rows(frame, split)
    if options.get("fit_frame") is not None:  # --fit-data: baselines fit on another set (e.g. a test-only folder)
        fit = fit_rows(options["fit_frame"])
    names = list(config.candidates)
    best = best_single_choices(evaluated, fit)
    router = build_router(router_name, len(names), fit, best, {**options, "candidates": names})
    picks = choose(router, evaluated)
    result: dict[str, Any] = {"router": router_name, "split": split, "candidates": names, "benchmarks": {}}
    for benchmark in TEST_BENCHMARKS:
        mask = (evaluated["benchmark"] == benchmark).to_numpy()
        if not mask.any():
            continue
        index, source = best[benchmark]
        entry = benchmark_entry(benchmark, evaluated[mask], picks[mask], index, source, names, config)
        if router_name == "random":
            entry["expected_score"] = entry["random"]
        result["benchmarks"][benchmark] = entry
    entries = result["benchmarks"].values()
    result["average"] = {key: float(np.mean([e[key] for e in entries])) for key in ("score", "normalized", "routing_accuracy")}
    return result


def format_table(result: dict[str, Any]) -> str:
    """A fixed-width table of one evaluation result."""
    header = f"{'benchmark':<11} {'n':>5} {'score':>8} {'oracle':>8} {'random':>8} {'best-1':>8} {'norm':>7} {'route-acc':>9}"
    lines = [f"router: {result['router']}  split: {result['split']}", header, "-" * len(header)]
    for name, e in result["benchmarks"].items():
        lines.append(
            f"{name:<11} {e['n']:>5} {e['score']:>8.2f} {e['oracle']:>8.2f} {e['random']:>8.2f} "
            f"{e['best_single']:>8.2f} {e['normalized']:>7.3f} {e['routing_accuracy']:>9.3f}"
        )
    a = result["average"]
    lines.append(f"{'average':<11} {'':>5} {a['score']:>8.2f} {'':>8} {'':>8} {'':>8} {a['normalized']:>7.3f} {a['routing_accuracy']:>9.3f}")
    return "\n".join(lines)


def format_comparison(results: list[dict[str, Any]]) -> str:
    """One row per router, one column per benchmark (native score), plus the mean normalised score."""
    benchmarks = list(results[0]["benchmarks"])
    header = f"{'router':<12}" + "".join(f"{b:>11}" for b in benchmarks) + f"{'avg norm':>10}"
    lines = [header, "-" * len(header)]
    for r in results:
        cells = "".join(f"{r['benchmarks'][b]['score']:>11.2f}" for b in benchmarks)
        lines.append(f"{r['router']:<12}{cells}{r['average']['normalized']:>10.3f}")
        if r["router"] == "random":  # the seeded draw above, its expectation here
            cells = "".join(f"{r['benchmarks'][b]['expected_score']:>11.2f}" for b in benchmarks)
            lines.append(f"{'random (E)':<12}{cells}{0.0:>10.3f}")
    return "\n".join(lines)
