"""The quality-cost frontier: what the cost knob of `route()` buys, router by router.

For each router the evaluated rows are scored ONCE; then `cost_weight` sweeps a grid over [0, 1]
and every grid point re-routes the same scores (`route(scores, prices, w)`), which is cheap. Each
operating point is (mean cost per query, quality), where quality is the mean over benchmarks of
the normalised score (score - random) / (oracle - random), as `evaluate` reports it, and each
benchmark's native metric is kept beside it.

References, as in RouteLLM: every single candidate is a point; the *cheapest* candidate (lowest
mean cost per query) and the *best* one (highest quality; ties to the cheaper) span the
random-mixing line, which sending a share of queries at random to the best candidate and the rest
to the cheapest achieves (exactly, for the linear metrics). `summarise` turns a router's points
into the headline numbers; its docstring defines them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from lookahead_ray.config import DataConfig
from lookahead_ray.data.costs import CostTable, load_cost_table, token_counter, token_counts
from lookahead_ray.data.schema import TEST_BENCHMARKS
from lookahead_ray.data import metrics as M
from lookahead_ray.evaluation.evaluate import as_batch, best_single_choices, build_router, select_rows
from lookahead_ray.routers.base import route
from lookahead_ray.tracking import use_experiment

log = logging.getLogger(__name__)

GRID_POINTS = 101
"""Cost weights 0, 0.01, ..., 1: fine enough that neighbouring points differ by a few queries."""
COST_SHARES = (0.25, 0.5, 0.75)
QUALITY_TARGET = 0.95


def cost_grid(points: int = GRID_POINTS) -> np.ndarray:
    if points < 2:
        raise ValueError(f"--grid-points must be >= 2, got {points}")
    return np.linspace(0.0, 1.0, points)


def score_rows(router, rows: pd.DataFrame, batch_size: int = 256) -> torch.Tensor:
    """The router's scores of every row, (N, T): each row goes through `score()` exactly once."""
    parts = [router.score(as_batch(rows.iloc[start : start + batch_size])).detach().cpu().to(torch.float64)
             for start in range(0, len(rows), batch_size)]
    return torch.cat(parts)  # (N, T)


class Scorer:
    """Quality and cost of any pick vector (N,) over fixed evaluated rows.

    The per-benchmark oracle and random references do not depend on the picks, so they are
    computed once here rather than at every grid point.
    """

    def __init__(self, rows: pd.DataFrame, query_costs: np.ndarray, names: Sequence[str]) -> None:
        self.names = list(names)
        self.query_costs = query_costs  # (N, T)
        self.parts = []
        for benchmark in TEST_BENCHMARKS:
            mask = (rows["benchmark"] == benchmark).to_numpy()
            if not mask.any():
                continue
            scores = np.stack(rows.loc[mask, "scores"].to_numpy())  # (n, T)
            aux = M.parse_aux(rows.loc[mask, "aux"].tolist())
            metric = M.metric_for(benchmark)
            n, t = scores.shape
            oracle = metric(scores, M.one_hot(scores.argmax(axis=1), t), aux)
            random = metric(scores, np.full((n, t), 1.0 / t), aux)
            self.parts.append((benchmark, mask, scores, aux, metric, random, oracle))

    def point(self, picks: np.ndarray) -> dict[str, Any]:
        native, normalised = {}, []
        for benchmark, mask, scores, aux, metric, random, oracle in self.parts:
            value = metric(scores, M.one_hot(picks[mask], scores.shape[1]), aux)
            native[benchmark] = value
            normalised.append(M.normalized(value, random, oracle))
        cost = self.query_costs[np.arange(len(picks)), picks]  # (N,)
        share = np.bincount(picks, minlength=len(self.names)) / len(picks)
        return {"cost": float(cost.mean()), "quality": float(np.mean(normalised)), "benchmarks": native,
                "pick_share": {name: float(s) for name, s in zip(self.names, share)}}


def sweep(scores: torch.Tensor, knob_costs: Sequence[float], grid: np.ndarray, scorer: Scorer) -> list[dict[str, Any]]:
    """One operating point per cost weight of `grid`, all from the same scores (N, T)."""
    seen: dict[bytes, dict[str, Any]] = {}
    points = []
    for weight in grid:
        picks = route(scores, knob_costs, float(weight)).numpy()  # (N,)
        key = picks.tobytes()
        if key not in seen:  # neighbouring weights often pick the same: measure once
            seen[key] = scorer.point(picks)
        points.append({"cost_weight": round(float(weight), 6), **seen[key]})
    return points


def candidate_points(scorer: Scorer, n_rows: int) -> list[dict[str, Any]]:
    return [{"candidate": name, **scorer.point(np.full(n_rows, t))} for t, name in enumerate(scorer.names)]


def reference(candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """The cheapest candidate and the best-quality one (ties to the cheaper): the mixing line's ends."""
    cheapest = min(candidates, key=lambda p: (p["cost"], -p["quality"]))
    best = max(candidates, key=lambda p: (p["quality"], -p["cost"]))
    return {"cheapest": cheapest["candidate"], "cheapest_cost": cheapest["cost"], "cheapest_quality": cheapest["quality"],
            "best": best["candidate"], "best_cost": best["cost"], "best_quality": best["quality"]}


def envelope(points: list[dict[str, Any]], ref: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The router's curve as (costs, qualities), both increasing: its points plus the cheapest
    candidate (where the knob's cheap end lies), dominated points dropped. Between two kept points
    the curve is linear: sending each query at random to one of two cost weights reaches it."""
    pairs = sorted({(p["cost"], p["quality"]) for p in points} | {(ref["cheapest_cost"], ref["cheapest_quality"])},
                   key=lambda pair: (pair[0], -pair[1]))
    costs, qualities = [], []
    for cost, quality in pairs:
        if not qualities or quality > qualities[-1]:
            costs.append(cost)
            qualities.append(quality)
    return np.asarray(costs), np.asarray(qualities)


def quality_at(cost: float, costs: np.ndarray, qualities: np.ndarray) -> float | None:
    """The curve's quality within a budget of `cost` (flat past its dearest point); None below its cheapest."""
    if cost < costs[0]:
        return None
    return float(np.interp(cost, costs, qualities))


def cost_for(quality: float, costs: np.ndarray, qualities: np.ndarray) -> float | None:
    """The least cost at which the curve reaches `quality`; None if it never does."""
    if quality > qualities[-1]:
        return None
    if quality <= qualities[0]:
        return float(costs[0])
    return float(np.interp(quality, qualities, costs))


def summarise(points: list[dict[str, Any]], ref: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of one router's sweep.

    Notation: c0, q0 are the cheapest candidate's mean cost per query and quality, c1, q1 the best
    candidate's. The router's curve Q(c) is `envelope()`: the best quality reachable within a mean
    cost of c (random mixing between neighbouring weights allowed, as the mixing line allows it).

    - `quality_share_at_cost`: Q(f * c1) / q1 for f in 0.25, 0.5, 0.75 (None where f * c1 is below
      the curve's cheapest point). Quality is the mean normalised score, so this is a share of
      the best candidate's gain over random, stricter than a share of a raw score.
    - `cost_share_for_95`: the least c with Q(c) >= 0.95 * q1, divided by c1 (CPT-style; None if the
      curve never gets there).
    - `apgr`: with u = (c - c0) / (c1 - c0) and PGR y(u) = (Q(c) - q0) / (q1 - q0), the integral of
      y over u in [0, 1]: RouteLLM's average performance gap recovered, with the cheapest and the
      best of T candidates as its weak and strong model and cost instead of strong-model calls.
    - `area_above_mixing`: apgr - 0.5, the signed area between the router's PGR curve and the
      random-mixing line y = u (0: no better than mixing; 0.5: the best quality at the cheapest
      cost). Undefined (None) when c1 <= c0 or q1 <= q0: then there is nothing to trade.
    - `min_gap_to_mixing`: min over the grid's points of y_i - min(u_i, 1), in PGR units, and the
      cost weight where it occurs; >= 0 means every grid point lies on or above the line.
    """
    costs, qualities = envelope(points, ref)
    c0, q0, c1, q1 = ref["cheapest_cost"], ref["cheapest_quality"], ref["best_cost"], ref["best_quality"]
    out: dict[str, Any] = {"cost_range": [min(p["cost"] for p in points), max(p["cost"] for p in points)],
                           "quality_range": [min(p["quality"] for p in points), max(p["quality"] for p in points)]}
    shares = {}
    for f in COST_SHARES:
        q = quality_at(f * c1, costs, qualities)
        shares[str(f)] = q / q1 if q is not None and q1 > 0 else None
    out["quality_share_at_cost"] = shares
    needed = cost_for(QUALITY_TARGET * q1, costs, qualities) if q1 > 0 else None
    out["cost_share_for_95"] = needed / c1 if needed is not None else None
    if c1 <= c0 or q1 <= q0:
        out.update(apgr=None, area_above_mixing=None, min_gap_to_mixing=None, min_gap_cost_weight=None)
        return out
    u = (costs - c0) / (c1 - c0)
    y = (qualities - q0) / (q1 - q0)
    knots = np.unique(np.concatenate([[0.0, 1.0], u[(u > 0) & (u < 1)]]))
    curve = np.interp(knots, u, y)  # exact: the curve is linear between knots, flat past its end
    apgr = float(np.sum((curve[1:] + curve[:-1]) / 2 * np.diff(knots)))
    gaps = [((p["quality"] - q0) / (q1 - q0) - min((p["cost"] - c0) / (c1 - c0), 1.0), p["cost_weight"]) for p in points]
    gap, weight = min(gaps)
    out.update(apgr=apgr, area_above_mixing=apgr - 0.5, min_gap_to_mixing=float(gap), min_gap_cost_weight=weight)
    return out


def build_routers(routers: Sequence[str] | Mapping[str, Any], n_candidates: int, fit: pd.DataFrame,
                  best: dict[str, tuple[int, str]], options: dict[str, Any]) -> dict[str, Any]:
    """label -> router. `routers` is a list of names (baselines, or trained ones with
    options['checkpoint']), or a mapping label -> router object (anything with `score`) or
    label -> options dict with `router` (default: the label) and `checkpoint`."""
    items = routers.items() if isinstance(routers, Mapping) else ((name, {}) for name in routers)
    built = {}
    for label, spec in items:
        if hasattr(spec, "score"):
            built[label] = spec
            continue
        spec = dict(spec or {})
        kind = spec.pop("router", label)
        built[label] = build_router(kind, n_candidates, fit, best, {**options, **spec})
    if not built:
        raise ValueError("--routers: name at least one router")
    return built


def frontier_for(frame: pd.DataFrame, routers: Sequence[str] | Mapping[str, Any], split: str = "test",
                 config: DataConfig = DataConfig(), costs: CostTable | None = None, tokens: str = "smollm2",
                 options: dict[str, Any] | None = None, grid: np.ndarray | None = None) -> dict[str, Any]:
    """The frontier of each router on a loaded frame (see `evaluate.load_frame`), as a JSON dict.

    `costs` defaults to the release table for `config.candidates`; `tokens` names the token
    counter of `data.costs`. Example (the replay report, one trained router):

        frontier_for(frame, {"lookahead-mlm": {"checkpoint": "runs/replay/mlm/best"}}, "test", config)
    """
    names = list(config.candidates)
    costs = costs or load_cost_table(None, names)
    if list(costs.candidates) != names:
        raise ValueError(f"cost table {costs.source} is for candidates {list(costs.candidates)}, the data has {names}")
    grid = cost_grid() if grid is None else np.asarray(grid, dtype=np.float64)
    evaluated, fit = select_rows(frame, split)
    prompt_tokens, response_tokens = token_counts(evaluated["prompt"].tolist(), evaluated["responses"].tolist(),
                                                  token_counter(tokens))
    scorer = Scorer(evaluated, costs.query_costs(prompt_tokens, response_tokens), names)
    built = build_routers(routers, len(names), fit, best_single_choices(evaluated, fit),
                          {**(options or {}), "candidates": names})
    singles = candidate_points(scorer, len(evaluated))
    ref = reference(singles)
    result: dict[str, Any] = {
        "split": split, "n": len(evaluated), "candidates": names,
        "costs": {"source": costs.source, "per_1k_output": list(costs.per_1k_output),
                  "per_1k_input": list(costs.per_1k_input), "tokens": tokens,
                  "mean_response_tokens": {n: float(v) for n, v in zip(names, response_tokens.mean(axis=0))}},
        "grid": [float(w) for w in grid], "single": singles, "reference": ref,
        "mixing_line": [[ref["cheapest_cost"], ref["cheapest_quality"]], [ref["best_cost"], ref["best_quality"]]],
        "routers": {},
    }
    for label, router in built.items():
        log.info("frontier: scoring %d rows with %s", len(evaluated), label)
        points = sweep(score_rows(router, evaluated), costs.knob_costs, grid, scorer)
        result["routers"][label] = {"points": points, "summary": summarise(points, ref)}
    return result


# --- output ------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def best_point_cost(points: list[dict[str, Any]]) -> float:
    """The least mean cost at which the router reaches its best quality."""
    top = max(p["quality"] for p in points)
    return min(p["cost"] for p in points if p["quality"] == top)


def format_frontier(result: dict[str, Any]) -> str:
    """Two fixed-width tables: the single candidates, then one row of headline numbers per router."""
    ref = result["reference"]
    benchmarks = list(result["single"][0]["benchmarks"])
    header = f"{'candidate':<28}{'cost/query':>11}{'quality':>9}" + "".join(f"{b:>11}" for b in benchmarks)
    lines = [f"split: {result['split']}  queries: {result['n']}  prices: {result['costs']['source']}  "
             f"tokens: {result['costs']['tokens']}", header, "-" * len(header)]
    for p in result["single"]:
        cells = "".join(f"{p['benchmarks'][b]:>11.2f}" for b in benchmarks)
        lines.append(f"{p['candidate']:<28}{p['cost']:>11.3f}{p['quality']:>9.3f}{cells}")
    lines += ["", f"mixing line: {ref['cheapest']} (cheapest) -> {ref['best']} (best quality); "
              f"shares are of {ref['best']}'s quality and cost"]
    if ref["best_cost"] <= ref["cheapest_cost"] or ref["best_quality"] <= ref["cheapest_quality"]:
        lines.append("the best candidate is also the cheapest: single candidates offer no trade-off, so APGR "
                     "and area are undefined (-); compare the routers' cost and quality columns instead")
    header = (f"{'router':<16}{'q@25%c':>8}{'q@50%c':>8}{'q@75%c':>8}{'c@95%q':>8}{'APGR':>8}"
              f"{'area':>8}{'min gap':>9}{'max q':>8}{'its cost':>9}{'min cost':>9}")
    lines += [header, "-" * len(header)]
    for label, entry in result["routers"].items():
        s = entry["summary"]
        shares = s["quality_share_at_cost"]
        lines.append(f"{label:<16}" + "".join(f"{_fmt(shares[str(f)]):>8}" for f in COST_SHARES)
                     + f"{_fmt(s['cost_share_for_95']):>8}{_fmt(s['apgr']):>8}{_fmt(s['area_above_mixing']):>8}"
                     + f"{_fmt(s['min_gap_to_mixing']):>9}{s['quality_range'][1]:>8.3f}"
                     + f"{best_point_cost(entry['points']):>9.3f}{s['cost_range'][0]:>9.3f}")
    return "\n".join(lines)


def plot_frontier(result: dict[str, Any], path: str | Path) -> Path:
    """Quality vs mean cost per query: one curve per router, the candidates as points, the mixing line."""
    import matplotlib  # imported here: plotting is optional and slow to import

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt  # heavy: as matplotlib above

    fig, ax = plt.subplots(figsize=(7, 5))
    for label, entry in result["routers"].items():
        points = sorted(entry["points"], key=lambda p: p["cost"])
        ax.plot([p["cost"] for p in points], [p["quality"] for p in points], marker=".", markersize=4, label=label)
    (c0, q0), (c1, q1) = result["mixing_line"]
    ax.plot([c0, c1], [q0, q1], linestyle="--", color="grey", label="random mixing")
    for p in result["single"]:
        ax.scatter(p["cost"], p["quality"], color="black", zorder=3)
        ax.annotate(p["candidate"], (p["cost"], p["quality"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"mean cost per query ({result['costs']['tokens']} tokens x price per 1k)")
    ax.set_ylabel("quality: mean normalised score")
    ax.set_title(f"quality-cost frontier, split {result['split']} ({result['n']} queries)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def frontier_metrics(result: dict[str, Any]) -> dict[str, float]:
    """MLflow metric names, e.g. `knn/apgr`, `knn/quality_share_at_cost_0.5`; None values left out."""
    out = {}
    for label, entry in result["routers"].items():
        s = entry["summary"]
        for key in ("apgr", "area_above_mixing", "cost_share_for_95", "min_gap_to_mixing"):
            if s[key] is not None:
                out[f"{label}/{key}"] = float(s[key])
        for f, share in s["quality_share_at_cost"].items():
            if share is not None:
                out[f"{label}/quality_share_at_cost_{f}"] = float(share)
    for p in result["single"]:
        out[f"single/{p['candidate']}/cost"] = p["cost"]
        out[f"single/{p['candidate']}/quality"] = p["quality"]
    return out


def log_frontier(result: dict[str, Any], png: str | Path | None, params: dict[str, Any]) -> str:
    """Log one frontier run to MLflow (params, metrics, the JSON and the plot); returns the run id."""
    import mlflow  # heavy: only when a frontier is logged

    use_experiment("lookahead-ray-frontier")
    with mlflow.start_run(run_name="frontier-" + "-".join(result["routers"])) as run:
        mlflow.log_params({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in params.items()})
        mlflow.log_metrics(frontier_metrics(result))
        mlflow.log_dict(result, "frontier.json")
        if png is not None:
            mlflow.log_artifact(str(png))
        return run.info.run_id
