"""The training mix: which train rows a router sees, and which val rows select it.

Why this module exists (issue: routers that collapse to one candidate): the release's train pool is
59 % SelfOSS code, on which Qwen2.5-Coder has the most positive labels, and about half of every
benchmark's rows are ties (every candidate right, or every one wrong) whose labels are all 1. A
router trained on that sample minimises its BCE by always answering "Qwen2.5-Coder". So:

- `drop_tied` leaves the tied rows out of training (they stay in val and test, where they cost
  every router the same);
- `mix: balanced` draws the same number of rows from every source (benchmark), with per-source
  weights and caps on top;
- model selection reads only the val rows of the benchmarks that are evaluated (`val_sets`), each
  benchmark weighted equally, exactly as `evaluate` averages the test.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lookahead_ray.config import TrainConfig
from lookahead_ray.data.labels import bce_targets
from lookahead_ray.data.schema import TEST_BENCHMARKS


def tied_mask(scores: np.ndarray, tolerance: float = 0.0) -> np.ndarray:
    """(N,) True where a row's T scores are all equal (max - min <= tolerance).

    >>> tied_mask(np.array([[1.0, 1.0], [0.0, 1.0]])).tolist()
    [True, False]
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return np.zeros(len(scores), dtype=bool)
    return (scores.max(axis=1) - scores.min(axis=1)) <= tolerance


def allocate(available: dict[str, int], total: int, weights: dict[str, float], fill: bool = False) -> dict[str, int]:
    """Rows to draw per source: `total` shared in proportion to `weights`, no source above what it has.

    Without `fill`, a source with fewer rows than its share gives them all and the shortfall is not
    drawn from the others (the sample shrinks but stays balanced). With `fill` (water-filling) the
    shortfall is shared again among the others. Leftover units of rounding go to the largest
    fractional shares (ties: name order).

    >>> allocate({"a": 10, "b": 100, "c": 100}, 90, {"a": 1, "b": 1, "c": 1})
    {'a': 10, 'b': 30, 'c': 30}
    >>> allocate({"a": 10, "b": 100, "c": 100}, 90, {"a": 1, "b": 1, "c": 1}, fill=True)
    {'a': 10, 'b': 40, 'c': 40}
    """
    counts = {name: 0 for name in available}
    open_ = {name for name in available if available[name] > 0 and weights.get(name, 0) > 0}
    remaining = min(total, sum(available[name] for name in open_))
    while open_ and remaining > 0:
        weight_sum = sum(weights[name] for name in open_)
        shares = {name: remaining * weights[name] / weight_sum for name in open_}
        full = {name for name in open_ if available[name] - counts[name] <= shares[name]}
        if not full:
            floors = {name: int(np.floor(shares[name])) for name in open_}
            left = remaining - sum(floors.values())
            order = sorted(open_, key=lambda name: (floors[name] - shares[name], name))
            for i, name in enumerate(order):
                counts[name] += floors[name] + (1 if i < left else 0)
            break
        for name in sorted(full):
            remaining -= available[name] - counts[name] if fill else shares[name]
            counts[name] = available[name]
        remaining = int(round(remaining))
        open_ -= full
    return counts


def source_weights(cfg: TrainConfig, available: dict[str, int]) -> dict[str, float]:
    """Per-source weights of `cfg.mix` with `cfg.source_weights` on top."""
    base = {name: (float(n) if cfg.mix == "natural" else 1.0) for name, n in available.items()}
    for name, weight in (cfg.source_weights or {}).items():
        base[name] = base.get(name, 1.0) * float(weight)
    return base


def check_sources_named(cfg: TrainConfig, sources: set[str]) -> None:
    """A weight or cap for a benchmark the data does not hold is a typo: say so."""
    for field_name in ("source_weights", "source_caps"):
        unknown = sorted(set(getattr(cfg, field_name) or {}) - sources)
        if unknown:
            raise ValueError(f"{field_name}: {unknown} not in {cfg.dataset} (sources: {sorted(sources)})")


def draw_train(rows: pd.DataFrame, cfg: TrainConfig) -> pd.DataFrame:
    """The train sample: tied rows dropped, sources capped, weighted and drawn (seeded), shuffled."""
    sources = set(rows["benchmark"])
    if cfg.drop_tied:
        rows = rows[~tied_mask(np.stack(rows["scores"].to_numpy()), cfg.data.labels.tie_tolerance)]
        only_ties = sorted(sources - set(rows["benchmark"]))
        if only_ties:
            raise ValueError(f"drop_tied leaves no train row of {only_ties}: every candidate scores the same on "
                             "each of them; set drop_tied: false or leave them out with `benchmarks:`")
    sizes = rows.groupby("benchmark").size().to_dict()
    check_sources_named(cfg, set(sizes))
    available = {name: min(n, int((cfg.source_caps or {}).get(name, n))) for name, n in sizes.items()}
    weights = source_weights(cfg, available)
    total = cfg.max_train_samples if cfg.max_train_samples is not None else sum(available.values())
    counts = allocate(available, total, weights, fill=cfg.mix == "fill")
    empty = sorted(name for name, n in counts.items() if n == 0)
    if empty:
        raise ValueError(f"the training mix leaves no train row of {empty}: raise its source_weights/"
                         f"source_caps, or leave it out with `benchmarks:`")
    if cfg.mix == "equal":  # every source its full share, a small one repeated (drawn with replacement)
        share = total * np.array([weights[n] for n in sorted(available)]) / sum(weights[n] for n in available)
        counts = {name: int(round(n)) for name, n in zip(sorted(available), share)}
    parts = [part.sample(n=counts[name], random_state=cfg.seed, replace=counts[name] > len(part))
             for name, part in rows.groupby("benchmark")]
    return pd.concat(parts).sample(frac=1.0, random_state=cfg.seed)


def selecting_sets(cfg: TrainConfig, val: pd.DataFrame) -> tuple[str, ...]:
    """The benchmarks whose val rows select the model, in TEST_BENCHMARKS order where they are such."""
    present = set(val["benchmark"])
    if cfg.val_sets is not None:
        missing = [name for name in cfg.val_sets if name not in present]
        if missing:
            raise ValueError(f"val_sets: no val row of {missing} in {cfg.dataset} (val has {sorted(present)})")
        return tuple(cfg.val_sets)
    tests = tuple(name for name in TEST_BENCHMARKS if name in present)
    # A generated dataset (the demo) has no test benchmark of the release: every set then selects.
    return tests or tuple(sorted(present))


def draw_val(rows: pd.DataFrame, cfg: TrainConfig) -> pd.DataFrame:
    """Val rows with a `selects` flag: every selecting benchmark (capped per set), then the other sets'
    rows (capped by max_val_samples), which are reported but do not select."""
    sets = selecting_sets(cfg, rows)
    chosen = rows["benchmark"].isin(sets)
    parts = []
    for name in sets:
        part = rows[rows["benchmark"] == name]
        if cfg.max_val_per_set is not None and len(part) > cfg.max_val_per_set:
            part = part.sample(n=cfg.max_val_per_set, random_state=cfg.seed)
        parts.append(part.assign(selects=True))
    others = rows[~chosen]
    if cfg.max_val_samples is not None and len(others) > cfg.max_val_samples:
        others = others.sample(n=cfg.max_val_samples, random_state=cfg.seed)
    if len(others):
        parts.append(others.assign(selects=False))
    return pd.concat(parts)


def label_prior(labels: np.ndarray, candidates: tuple[str, ...]) -> dict[str, float]:
    """Share of positive labels per candidate: the BCE optimum of a router that ignores the prompt."""
    means = np.asarray(labels, dtype=np.float64).mean(axis=0) if len(labels) else np.zeros(len(candidates))
    return {name: float(value) for name, value in zip(candidates, means)}


def mix_summary(frame: pd.DataFrame, train: pd.DataFrame, val: pd.DataFrame, cfg: TrainConfig) -> dict[str, Any]:
    """Per source: train rows available, tied, drawn; val rows and whether they select; label priors."""
    pool = frame[frame["split"] == "train"]
    tied = tied_mask(np.stack(pool["scores"].to_numpy()), cfg.data.labels.tie_tolerance)
    sources = {}
    for name in sorted(set(pool["benchmark"]) | set(val["benchmark"])):
        in_pool = (pool["benchmark"] == name).to_numpy()
        in_val = val[val["benchmark"] == name]
        sources[name] = {"train_pool": int(in_pool.sum()), "tied": int((tied & in_pool).sum()),
                         "drawn": int((train["benchmark"] == name).sum()), "val": int(len(in_val)),
                         "selects": bool(len(in_val) and in_val["selects"].all())}
    candidates = tuple(cfg.data.candidates)
    return {"sources": sources, "train_rows": int(len(train)),
            "label_prior": label_prior(np.stack(train["labels"].to_numpy()), candidates),
            "pool_label_prior": label_prior(np.stack(with_labels(pool, cfg)), candidates)}


def with_labels(rows: pd.DataFrame, cfg: TrainConfig) -> list[np.ndarray]:
    return list(bce_targets(np.stack(rows["scores"].to_numpy()), cfg.data.labels))


def format_mix(summary: dict[str, Any]) -> str:
    """The mix as a table, then the label priors of the drawn sample and of the whole train pool."""
    header = f"{'source':<32} {'train pool':>10} {'tied':>6} {'drawn':>6} {'val':>5}  selects"
    lines = [header, "-" * len(header)]
    for name, s in summary["sources"].items():
        lines.append(f"{name:<32} {s['train_pool']:>10} {s['tied']:>6} {s['drawn']:>6} {s['val']:>5}  "
                     f"{'yes' if s['selects'] else 'no'}")
    lines.append(f"{'total':<32} {'':>10} {'':>6} {summary['train_rows']:>6}")
    lines.append("positive-label share per candidate (drawn sample | whole train pool):")
    for name, value in summary["label_prior"].items():
        lines.append(f"  {name:<30} {value:.3f} | {summary['pool_label_prior'][name]:.3f}")
    return "\n".join(lines)
