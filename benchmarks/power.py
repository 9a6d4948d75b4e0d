"""Can the replay split resolve a margin? Standard errors and power of the paired router comparisons.

    python benchmarks/power.py --replay benchmarks/results/replay.json --router lookahead-mlm --effect 0.02

For each comparison of --router (against best-single, and against MLC when the replay trained it) this
reads the per-query picks that `bench replay` stored and gives, on the benchmark average:

- the mean difference and its paired-bootstrap standard error over queries and seeds
  (evaluation/stats.py, the same replicates as the replay report's 95 % intervals);
- the part of that error that comes from the queries alone (seeds held fixed: the per-query
  differences averaged over seeds, std / sqrt(n) per benchmark), and the rest, which comes from
  the seeds and does not shrink with more queries;
- the power to find a true difference of --effect (and one equal to the observed mean) with a 95 %
  interval that excludes 0, and how many times today's test queries that would need at 80 % power,
  with today's seeds and with --more-seeds
  (normal approximation; the seed part of the variance shrinks as 1 / seeds; "never" when the seed
  part alone is too large, so more seeds are needed, not more queries).

The last line is the command.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from statistics import NormalDist

import numpy as np

from lookahead_ray.evaluation.stats import bootstrap_interval, paired_differences

Z_95 = NormalDist().inv_cdf(0.975)  # two-sided 95 % interval
Z_80 = NormalDist().inv_cdf(0.80)  # 80 % power


def query_error(diffs: dict[str, np.ndarray]) -> float:
    """Standard error of the benchmark average from the queries alone (seeds fixed)."""
    per_set = [d.mean(axis=0).std(ddof=1) / math.sqrt(d.shape[1]) for d in diffs.values()]  # d: (S, N)
    return math.sqrt(sum(se ** 2 for se in per_set)) / len(per_set)  # the average weighs sets equally


def power(effect: float, se: float) -> float:
    """P(the 95 % interval excludes 0 above it | the true difference is `effect`)."""
    return 1.0 - NormalDist().cdf(Z_95 - effect / se) if se > 0 else float(effect > 0)


def seed_variance(total_se: float, query_se: float) -> float:
    """The part of the bootstrap variance that the queries do not explain: the seeds'."""
    return max(total_se ** 2 - query_se ** 2, 0.0)


def queries_factor(effect: float, query_se: float, seed_var: float, seed_ratio: float = 1.0) -> float:
    """How many times today's queries give 80 % power for `effect`, with `seed_ratio` times today's
    seeds (the seed part of the variance shrinks as 1 / seeds); inf if the seed part alone is too big."""
    needed = effect / (Z_95 + Z_80)  # the total standard error that 80 % power needs
    seed_var = seed_var / seed_ratio
    if seed_var >= needed ** 2:
        return math.inf
    return query_se ** 2 / (needed ** 2 - seed_var)


def analyse(diffs: dict[str, np.ndarray], effect: float, more_seeds: int) -> dict[str, float]:
    interval = bootstrap_interval(diffs)["average"]
    total, queries = interval["se"], query_error(diffs)
    seed_var, seeds = seed_variance(total, queries), next(iter(diffs.values())).shape[0]
    return {"mean": interval["mean"], "low": interval["low"], "high": interval["high"], "se": total,
            "query_se": queries, "seed_se": math.sqrt(seed_var), "seeds": seeds,
            "power": power(effect, total), "power_observed": power(interval["mean"], total),
            "queries_factor": queries_factor(effect, queries, seed_var),
            "more_seeds_factor": queries_factor(effect, queries, seed_var, more_seeds / seeds),
            "queries": sum(d.shape[1] for d in diffs.values())}


def comparisons(replay: dict, router: str, effect: float, more_seeds: int) -> dict[str, dict[str, float]]:
    results = replay["trained"].get(router)
    if not results:
        raise SystemExit(f"the replay has no results for router {router!r}")
    best_single = [replay["baselines"]["best-single"]]
    out = {"best-single": analyse(paired_differences(results, best_single), effect, more_seeds)}
    mlc = replay["trained"].get("mlc", [])
    if router != "mlc" and len(mlc) == len(results):
        out["mlc"] = analyse(paired_differences(results, mlc), effect, more_seeds)
    return out


def factor_cell(factor: float) -> str:
    return "never (the seed part alone is too large)" if math.isinf(factor) else f"{factor:.1f}x"


def table(router: str, rows: dict[str, dict[str, float]], effect: float, more_seeds: int) -> str:
    seeds = next(iter(rows.values()))["seeds"]
    lines = [f"| {router} vs | mean [95 % CI] | SE | SE from queries | SE from seeds | test queries "
             f"| power for +{effect:.2f} | power at the mean "
             f"| queries for 80 % power, {seeds} seeds | ..., {more_seeds} seeds |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for other, r in rows.items():
        lines.append(f"| {other} | {r['mean']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}] | {r['se']:.3f} "
                     f"| {r['query_se']:.3f} | {r['seed_se']:.3f} | {r['queries']:.0f} "
                     f"| {r['power']:.2f} | {r['power_observed']:.2f} "
                     f"| {factor_cell(r['queries_factor'])} | {factor_cell(r['more_seeds_factor'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replay", required=True, help="a bench replay replay.json with per-query picks")
    parser.add_argument("--router", default="lookahead-mlm", help="mlc | lookahead-mlm | lookahead-clm")
    parser.add_argument("--effect", type=float, default=0.02, help="the true difference to detect")
    parser.add_argument("--more-seeds", type=int, default=10, help="a second seed count to size the test for")
    args = parser.parse_args(argv)
    if args.effect <= 0:
        raise SystemExit(f"--effect must be > 0, got {args.effect}")
    if args.more_seeds < 1:
        raise SystemExit(f"--more-seeds must be >= 1, got {args.more_seeds}")
    replay = json.loads(Path(args.replay).read_text())
    rows = comparisons(replay, args.router, args.effect, args.more_seeds)
    print(table(args.router, rows, args.effect, args.more_seeds))
    print("command: python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
