"""Uncertainty of the replay comparisons: paired bootstrap intervals over queries and seeds, and the
collapse flag.

A router's normalised score on an accuracy benchmark is the mean over its queries of
100 * picked_q / (oracle - random) minus a constant, so the difference of two routers is the mean
of per-query differences d_q = 100 * (a_q - b_q) / (oracle - random): both routers are compared on
the same queries (paired). One bootstrap replicate draws, per benchmark, the queries with
replacement and, with replacement too, the seeds (seed s of one router paired with seed s of the
other); the replicate's difference is the mean over benchmarks of the mean over the drawn seeds and
queries. The 95 % interval is the 2.5th to 97.5th percentile of 2,000 replicates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ACCURACY_SETS = ("GSM8K", "MATH", "HumanEval", "MBPP")
COLLAPSE_SHARE = 0.9
"""A router is collapsed when one candidate gets more than this share of every benchmark's queries."""


def per_query_gain(entry: dict[str, Any], other: list[float]) -> np.ndarray:
    """(N,) per-query normalised difference of a benchmark entry's picks against `other` picked scores."""
    spread = entry["oracle"] - entry["random"]
    if spread == 0:
        return np.zeros(len(other))
    return 100.0 * (np.asarray(entry["picked"], dtype=float) - np.asarray(other, dtype=float)) / spread


def paired_differences(results: list[dict], others: list[dict]) -> dict[str, np.ndarray]:
    """Per accuracy benchmark, (seeds, N) per-query differences of `results` against `others` (one
    result per seed each; a single `others` result, as best-single's, pairs with every seed)."""
    if len(others) == 1:
        others = others * len(results)
    out = {}
    for benchmark in ACCURACY_SETS:
        if benchmark not in results[0]["benchmarks"]:
            continue
        out[benchmark] = np.stack([per_query_gain(r["benchmarks"][benchmark], o["benchmarks"][benchmark]["picked"])
                                   for r, o in zip(results, others)])  # (S, N)
    return out


def bootstrap_interval(diffs: dict[str, np.ndarray], replicates: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Mean difference and 95 % paired-bootstrap interval, per benchmark and on the benchmark average."""
    rng = np.random.default_rng(seed)
    samples = {}
    for benchmark, d in diffs.items():
        n_seeds, n = d.shape
        seeds = rng.integers(0, n_seeds, size=(replicates, n_seeds))  # (R, S)
        queries = rng.integers(0, n, size=(replicates, n))  # (R, N)
        per_seed = np.stack([d[seeds[:, j]][np.arange(replicates)[:, None], queries].mean(axis=1)
                             for j in range(n_seeds)], axis=1)  # (R, S)
        samples[benchmark] = per_seed.mean(axis=1)  # (R,)
    out = {b: summary(diffs[b].mean(), samples[b]) for b in diffs}
    out["average"] = summary(np.mean([d.mean() for d in diffs.values()]), np.mean(list(samples.values()), axis=0))
    return out


def summary(mean: float, samples: np.ndarray) -> dict[str, Any]:
    low, high = np.percentile(samples, [2.5, 97.5])
    return {"mean": float(mean), "low": float(low), "high": float(high), "excludes_zero": bool(low > 0 or high < 0),
            "se": float(np.std(samples, ddof=1))}  # the bootstrap standard error (benchmarks/power.py)


def collapsed(result: dict[str, Any]) -> bool:
    """True when one candidate gets more than COLLAPSE_SHARE of every benchmark's queries.

    >>> collapsed({"benchmarks": {"A": {"pick_share": {"x": 0.95, "y": 0.05}}, "B": {"pick_share": {"x": 1.0, "y": 0.0}}}})
    True
    >>> collapsed({"benchmarks": {"A": {"pick_share": {"x": 0.95, "y": 0.05}}, "B": {"pick_share": {"x": 0.0, "y": 1.0}}}})
    False
    """
    shares = [entry["pick_share"] for entry in result["benchmarks"].values()]
    return any(all(share[name] > COLLAPSE_SHARE for share in shares) for name in shares[0])


def comparisons(trained: dict[str, list[dict]], baselines: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """Per trained router: bootstrap intervals vs MLC (paired by seed) and vs best-single, and the
    number of its seeds that collapsed."""
    out: dict[str, dict[str, Any]] = {}
    for router, results in trained.items():
        if not results or "picked" not in next(iter(results[0]["benchmarks"].values())):
            continue  # results written before per-query picks were kept
        row: dict[str, Any] = {"collapsed_seeds": sum(collapsed(r) for r in results), "seeds": len(results)}
        if "best-single" in baselines:
            row["vs_best_single"] = bootstrap_interval(paired_differences(results, [baselines["best-single"]]))
        if router != "mlc" and len(trained.get("mlc", [])) == len(results):
            row["vs_mlc"] = bootstrap_interval(paired_differences(results, trained["mlc"]))
        out[router] = row
    return out


def interval_table(stats: dict[str, dict[str, Any]]) -> str:
    """Markdown: the average difference and its 95 % interval vs MLC and vs best-single, per router,
    then the per-benchmark intervals, and the collapse count."""
    lines = ["| router | vs MLC: mean [95 % CI] | vs best-single: mean [95 % CI] | collapsed seeds |",
             "|---|---:|---:|---:|"]
    for router, row in stats.items():
        cells = [cell(row.get(key, {}).get("average")) for key in ("vs_mlc", "vs_best_single")]
        lines.append(f"| {router} | {cells[0]} | {cells[1]} | {row['collapsed_seeds']}/{row['seeds']} |")
    lines += ["", "| router | vs | " + " | ".join(ACCURACY_SETS) + " |", "|---|---|" + "---:|" * len(ACCURACY_SETS)]
    for router, row in stats.items():
        for key in ("vs_mlc", "vs_best_single"):
            if key in row:
                lines.append(f"| {router} | {key[3:]} | " + " | ".join(cell(row[key].get(b)) for b in ACCURACY_SETS) + " |")
    return "\n".join(lines)


def cell(value: dict[str, Any] | None) -> str:
    if not value:
        return ""
    star = "*" if value["excludes_zero"] else ""
    return f"{value['mean']:+.3f} [{value['low']:+.3f}, {value['high']:+.3f}]{star}"
