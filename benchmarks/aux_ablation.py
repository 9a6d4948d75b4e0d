"""The auxiliary-loss ablation of Lookahead-MLM at equal budget (issue 11, item 4).

    python benchmarks/aux_ablation.py --data ../shared/data/lookahead-release --seed-list 0 --address local

Three arms of the replay's CPU Lookahead-MLM (configs/replay-mlm-cpu.yaml), identical but for:
- `aux 0`: no response (masked-token) loss, no head warm-up: a prompt-and-blocks classifier;
- `aux 0.2`: the paper's weight, the auxiliary loss on all-MiniLM-L6-v2's random MLM head from step 1;
- `aux 0.2 + warm-up`: the shipped config (the head fitted alone for `head_warmup_steps` first).

Every arm takes the same routing steps on the same rows with the same seed; the warm-up's head-only
steps come on top (backbone frozen). Each arm is one `bench replay` of the masked router into its own
runs folder; the shipped arm uses the replay's runs folder (`--shipped-runs`), so a seed the replay
already trained is read back, not retrained. The table gives each arm's test score, the paired
bootstrap interval of each arm against the shipped one, and the best val score that selected its
checkpoint. The last line is the command that made it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from lookahead_ray.config import TrainConfig, from_dict

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = "aux 0.2 + warm-up"
ARMS = {
    "aux 0": {"aux_weight": 0.0, "head_warmup_steps": 0},
    "aux 0.2": {"aux_weight": 0.2, "head_warmup_steps": 0},
    SHIPPED: {},
}


def slug(arm: str) -> str:
    return arm.replace(" + ", "-").replace(" ", "").replace(".", "")


def arm_config(base: dict, arm: str) -> dict:
    """The replay config of a changed arm: the shipped MLM config with the arm's fields replaced,
    checked as TrainConfig fields before it is written (an unknown field names itself)."""
    values = {**base, **ARMS[arm], "register_as": f"ablation-{slug(arm)}"}
    from_dict(TrainConfig, values, f"arm {arm!r}")
    return values


def write_arm_configs(out: Path, base_path: Path) -> dict[str, Path]:
    """One configs folder per changed arm (bench replay reads `replay-mlm-cpu.yaml` from it); the
    shipped arm reads the shipped folder, so its run folders keep the replay's config digest."""
    base = yaml.safe_load(base_path.read_text())
    folders = {SHIPPED: base_path.parent}
    for arm in ARMS:
        if arm == SHIPPED:
            continue
        folder = out / "configs" / slug(arm)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / base_path.name).write_text(f"# {arm}: {base_path} with {ARMS[arm]} (benchmarks/aux_ablation.py)\n"
                                             + yaml.safe_dump(arm_config(base, arm), sort_keys=False))
        folders[arm] = folder
    return folders


def ablation_table(results: dict[str, list[dict]], val_best: dict[str, list[float]]) -> str:
    """Markdown: per arm, the test score over seeds, its paired interval against the shipped arm, and
    the val score of the checkpoints that were selected."""
    from lookahead_ray.evaluation.stats import bootstrap_interval, cell, paired_differences
    from lookahead_ray.replay import mean_normalized

    lines = ["| arm | test avg normalised (per seed) | vs shipped: mean [95 % CI] | best val_score (per seed) |",
             "|---|---:|---:|---:|"]
    for arm, runs in results.items():
        scores = ", ".join(f"{mean_normalized(r):.3f}" for r in runs)
        versus = "" if arm == SHIPPED else cell(bootstrap_interval(paired_differences(runs, results[SHIPPED]))["average"])
        vals = ", ".join(f"{v:.3f}" for v in val_best.get(arm, []))
        lines.append(f"| {arm} | {scores} | {versus} | {vals} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the release folder (or an imported dataset)")
    parser.add_argument("--seed-list", default="0", help="comma-separated seeds, e.g. 0,1")
    parser.add_argument("--runs", default="runs/ablation", help="run folders of the changed arms")
    parser.add_argument("--shipped-runs", default="runs/replay4", help="the replay's runs folder (shipped arm)")
    parser.add_argument("--out", default="benchmarks/results/aux-ablation", help="folder for the table")
    parser.add_argument("--address", default=None, help="Ray address (`local`: a new local Ray)")
    args = parser.parse_args()

    import ray  # heavy: only when the arms run

    from lookahead_ray.replay import run_replay
    from lookahead_ray.tuning import start_ray

    seeds = tuple(int(s) for s in args.seed_list.split(","))
    out = Path(args.out)
    folders = write_arm_configs(out, ROOT / "configs" / "replay-mlm-cpu.yaml")
    command = "python benchmarks/aux_ablation.py " + " ".join(sys.argv[1:])
    if not ray.is_initialized():
        start_ray(args.address)
    results, val_best = {}, {}
    for arm, folder in folders.items():
        print(f"[ablation] arm {arm}: configs {folder}", flush=True)
        runs = args.shipped_runs if arm == SHIPPED else str(Path(args.runs) / slug(arm))
        replay = run_replay(args.data, out_dir=str(out / slug(arm)), runs_dir=runs, config_dir=str(folder),
                            routers=("lookahead-mlm",), command=command, seed_list=seeds,
                            frontier=False)  # the cost axis is not what this compares
        results[arm] = replay["trained"]["lookahead-mlm"]
        val_best[arm] = replay["best_val_score"]["lookahead-mlm"]  # the val_score that selected each checkpoint
    table = ablation_table(results, val_best)
    (out / "ablation.md").write_text(f"`{command}`\n\n{table}\n")
    print(table)
    print(command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
