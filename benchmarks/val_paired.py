"""Two recipes of one router compared on val, paired by seed and query: is the difference noise?

    python benchmarks/val_paired.py --router lookahead-mlm --data ../shared/data/lookahead-release \
        --a benchmarks/results/replay-mlm-session12/replay.json --b runs/replay13-out/replay.json

--a and --b each name one recipe's checkpoints, one per seed in the same seed order: a `bench replay`
replay.json (its best checkpoints of --router) or a comma-separated list of checkpoint folders.
Every checkpoint is scored on every val row of GSM8K, MATH, HumanEval and MBPP (the replay split's
val: never test), which is more rows than training selected on (at most `max_val_per_set` per
benchmark, drawn by seed), so the selection rows are a part of them. The table gives each seed's
normalised val score per arm, and the paired bootstrap interval of b - a over queries and seeds
(evaluation/stats.py), per benchmark and on the average. The last line is the command.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lookahead_ray.config import load_data_config
from lookahead_ray.evaluation.evaluate import evaluate, load_frame
from lookahead_ray.evaluation.stats import ACCURACY_SETS, bootstrap_interval, cell, paired_differences


def checkpoints(arm: str, router: str) -> list[str]:
    """One recipe's checkpoints, seed by seed, from a replay.json or a comma-separated list."""
    if arm.endswith(".json"):
        found = json.loads(Path(arm).read_text()).get("best_checkpoints", {}).get(router)
        if not found:
            raise SystemExit(f"{arm}: no best_checkpoints for router {router!r}")
        return list(found)
    return [path for path in arm.split(",") if path]


def score_arm(router: str, paths: list[str], frame, config) -> list[dict]:
    results = []
    for path in paths:
        print(f"[val_paired] scoring {path} on val ...", flush=True)
        results.append(evaluate(router, frame, "val", config, options={"checkpoint": path}))
    return results


def table(a: list[dict], b: list[dict], interval: dict) -> str:
    sets = [name for name in ACCURACY_SETS if name in a[0]["benchmarks"]]
    heads = [f"{name} ({a[0]['benchmarks'][name]['n']})" for name in sets]  # the rows each set has
    rows = [f"| arm | seed | {' | '.join(heads)} | avg |",
            "|---|---:|" + "---:|" * (len(sets) + 1)]
    for arm, results in (("a", a), ("b", b)):
        for seed, result in enumerate(results):
            cells = [f"{result['benchmarks'][name]['normalized']:.3f}" for name in sets]
            rows.append(f"| {arm} | {seed} | {' | '.join(cells)} | {result['average']['normalized']:.3f} |")
    rows += ["", "| b - a, paired 95 % CI | " + " | ".join(sets) + " | avg |", "|---|" + "---:|" * (len(sets) + 1),
             "| | " + " | ".join(cell(interval.get(name)) for name in sets) + f" | {cell(interval['average'])} |"]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--router", required=True, help="mlc | lookahead-mlm | lookahead-clm")
    parser.add_argument("--data", required=True, help="the release folder or an imported dataset")
    parser.add_argument("--a", required=True, help="recipe a: a replay.json or CKPT[,CKPT...], one per seed")
    parser.add_argument("--b", required=True, help="recipe b: as --a, the same seeds in the same order")
    parser.add_argument("--config", default=None, help="YAML with candidates, labels and split settings")
    args = parser.parse_args(argv)
    a_paths, b_paths = checkpoints(args.a, args.router), checkpoints(args.b, args.router)
    if len(a_paths) != len(b_paths):
        raise SystemExit(f"--a has {len(a_paths)} checkpoints and --b {len(b_paths)}: pair them seed by seed")
    config = load_data_config(args.config)
    frame = load_frame(args.data, config)
    a, b = score_arm(args.router, a_paths, frame, config), score_arm(args.router, b_paths, frame, config)
    print(table(a, b, bootstrap_interval(paired_differences(b, a))))
    print("command: python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
