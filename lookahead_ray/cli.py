"""`lookahead-ray <command>`: one table of subcommands, one library function each."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Callable

from lookahead_ray.config import load_data_config, load_pool, load_train_config, to_dict
from lookahead_ray.evaluation.calibrate import check_target, pick_weight, tag_model_version, write_serve_config
from lookahead_ray.storage import staged
from lookahead_ray.submit import job_env, render, submit_command
from lookahead_ray.tracking import log_evaluation
from lookahead_ray.tuning import load_sweep, run_sweep, start_ray


def cmd_import_release(args: argparse.Namespace) -> int:
    """Import a release folder into the routing-dataset schema (Parquet + manifest)."""
    from lookahead_ray.data.release import import_release, release_root  # heavy: off the CLI's start-up path
    from lookahead_ray.data.schema import write_dataset  # heavy: off the CLI's start-up path

    config = load_data_config(args.config)
    frame = import_release(args.path, config)
    manifest = {"source": str(release_root(args.path).resolve()), **to_dict(config)}
    write_dataset(frame, args.out, manifest)
    for (benchmark, split), n in frame.groupby(["benchmark", "split"], sort=False).size().items():
        print(f"{benchmark:<30} {split:<5} {n:>6}")
    print(f"wrote {len(frame)} queries to {args.out}")
    return 0


def _evaluate_one(router: str, frame, args: argparse.Namespace, config) -> dict:
    from lookahead_ray.evaluation.evaluate import evaluate  # heavy: off the CLI's start-up path

    options = {"seed": args.seed, "k": args.k, "checkpoint": getattr(args, "checkpoint", None),
               "fit_frame": fit_frame(args, config)}
    result = evaluate(router, frame, args.split, config, options)
    result["data"] = str(args.data)
    if getattr(args, "fit_data", None):
        result["fit_data"] = str(args.fit_data)
    if not args.no_mlflow:
        params = {"router": router, "data": str(args.data), "split": args.split, "seed": args.seed, "k": args.k,
                  **{f"data.{k}": v for k, v in to_dict(config).items()}}
        result["mlflow_run_id"] = log_evaluation(result, params)
    return result


def fit_frame(args: argparse.Namespace, config):
    """The --fit-data set, loaded once per command (None without the flag)."""
    if not getattr(args, "fit_data", None):
        return None
    if not hasattr(args, "_fit_frame"):
        from lookahead_ray.evaluation.evaluate import load_frame  # heavy: off the CLI's start-up path

        args._fit_frame = load_frame(args.fit_data, config)
    return args._fit_frame


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate one router; print its table and optionally write the JSON."""
    from lookahead_ray.evaluation.evaluate import format_table, load_frame  # heavy: off the CLI's start-up path

    config = load_data_config(args.config)
    result = _evaluate_one(args.router, load_frame(args.data, config), args, config)
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Evaluate several routers and print one comparison table."""
    from lookahead_ray.evaluation.evaluate import format_comparison, load_frame  # heavy: off the CLI's start-up path

    config = load_data_config(args.config)
    frame = load_frame(args.data, config)
    results = []
    for router in args.routers.split(","):
        print(f"[report] evaluating {router} ...", flush=True)
        results.append(_evaluate_one(router.strip(), frame, args, config))
    print(format_comparison(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def cmd_heldout(args: argparse.Namespace) -> int:
    """Per task: where a trained router sends held-out prompts, and its accuracy next to each candidate's."""
    from lookahead_ray.evaluation.evaluate import dataset_config, load_frame, trained_router  # heavy: off CLI start-up
    from lookahead_ray.evaluation.heldout import format_heldout, heldout_rows, route_heldout  # heavy: off CLI start-up
    from lookahead_ray.registry import resolve_checkpoint, resolve_latest  # heavy: off the CLI's start-up path
    from lookahead_ray.routers.checkpoint import read_spec  # heavy: off the CLI's start-up path

    config = load_data_config(args.config) if args.config else dataset_config(args.data)
    frame = load_frame(args.data, config)
    names = list(config.candidates)
    source = resolve_latest(args.checkpoint, names)  # models:/NAME/latest -> this pool's newest version
    local = resolve_checkpoint(source)  # downloaded once: the spec and the router read the same folder
    kind = read_spec(local).kind
    router = trained_router(kind, len(names), {"checkpoint": local, "candidates": names})
    report = route_heldout(router, heldout_rows(frame, args.split), names)
    print(f"router {kind} from {source}, on the {args.split!r} split of {args.data}:")
    print(format_heldout(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train a router on Ray Train; log it to MLflow and register the best checkpoint."""
    import ray  # heavy: off the CLI's start-up path

    from lookahead_ray.training.trainer import train  # heavy: off the CLI's start-up path

    overrides = {"router": args.router, "dataset": args.data, "max_steps": args.max_steps, "name": args.name}
    cfg = load_train_config(args.config, **overrides)
    if not ray.is_initialized():
        start_ray(args.address)  # Train's placement-group cleaner must know this cluster's address
    outcome = train(cfg, mlflow_enabled=not args.no_mlflow)
    print(json.dumps(dataclasses.asdict(outcome), indent=2, default=str))
    return 0


def cmd_mix(args: argparse.Namespace) -> int:
    """Print a training config's mix: rows per source (pool, tied, drawn), val sets, label priors."""
    from lookahead_ray.data.mix import format_mix, mix_summary  # heavy: off the CLI's start-up path
    from lookahead_ray.training.data import split_rows, with_targets  # heavy: off the CLI's start-up path

    cfg = load_train_config(args.config, dataset=args.data, seed=args.seed)
    frame, train, val = split_rows(cfg)
    summary = mix_summary(frame, with_targets(train, cfg, ["labels", "benchmark"]), val, cfg)
    print(format_mix(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def seed_list(text: str | None) -> tuple[int, ...]:
    """`--seed-list 1,2` -> (1, 2); a bad list is a usage error that names the flag."""
    if not text:
        return ()
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise SystemExit(f"--seed-list: expected comma-separated integers, got {text!r}") from None
    if any(seed < 0 for seed in seeds) or len(set(seeds)) != len(seeds):
        raise SystemExit(f"--seed-list: seeds must be distinct and >= 0, got {text!r}")
    return seeds


def cmd_bench(args: argparse.Namespace) -> int:
    """Benchmarks: `bench replay` trains the routers on the replay split and evaluates them."""
    import ray  # heavy: off the CLI's start-up path

    from lookahead_ray.replay import TRAINED, merge_replays, run_replay  # heavy: off the CLI's start-up path

    command = "lookahead-ray " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else ""
    routers = tuple(args.routers.split(",")) if args.routers else TRAINED
    if args.merge:
        merge_replays(args.merge, args.out, command, routers)
        return 0
    if not args.data:
        raise SystemExit("bench replay: --data is required (unless --merge)")
    if not ray.is_initialized():
        start_ray(args.address)  # as in train: the cleaner of each run needs the address
    run_replay(args.data, args.seeds, args.full, args.out, args.runs, args.configs, routers,
               mlflow_enabled=not args.no_mlflow, command=command, seed_list=seed_list(args.seed_list))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """Sweep a router's training config with Tune (Optuna + ASHA); retrain and register the best."""
    import ray  # heavy: off the CLI's start-up path

    sweep, base = load_sweep(args.space, args.router, args.config, args.data, args.num_samples)
    if not ray.is_initialized():
        start_ray(args.address)
    outcome = run_sweep(sweep, base)
    print(json.dumps(dataclasses.asdict(outcome), indent=2, default=str))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Answer every prompt with every candidate of a pool (Ray Data; resumes a killed run)."""
    import ray  # heavy: off the CLI's start-up path

    from lookahead_ray.data.generate import GenerateOptions, generate  # heavy: off the CLI's start-up path
    from lookahead_ray.data.prompts import load_prompts  # heavy: off the CLI's start-up path

    pool, prompts = load_pool(args.pool), load_prompts(args.prompts)
    options = GenerateOptions(shard_size=args.shard_size, batch_size=args.batch_size, dtype=args.dtype,
                              max_model_len=args.max_model_len, engine_restarts=args.engine_restarts)
    if not ray.is_initialized():
        ray.init(address=args.address)
    with staged(args.out, "--out") as out:  # s3:// or gs://: written locally, then copied up
        print(json.dumps(generate(pool, prompts, out, options), indent=2))
    return 0


def cmd_grade(args: argparse.Namespace) -> int:
    """Grade a generation folder into the routing-dataset schema (Ray Data map); print the scores."""
    import ray  # heavy: off the CLI's start-up path

    from lookahead_ray.data.grade import format_scores, grade_generation  # heavy: off the CLI's start-up path

    config = load_data_config(args.config)
    if not ray.is_initialized():
        ray.init(address=args.address)
    with staged(args.in_dir, "--in", upload=False) as in_dir:  # --out is written through pyarrow.fs
        frame = grade_generation(in_dir, args.out, config, reward_model=args.reward_model,
                                 workers=args.workers, timeout_s=args.timeout)
    print(format_scores(frame))
    print(f"wrote {len(frame)} prompts to {args.out}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    """Print (or --run) the `ray job submit` line that runs a stage on a Ray cluster."""
    import subprocess  # stdlib, but it loads signal and selectors: off the start-up path

    env = job_env(args.env, args.tracking_uri)
    command = submit_command(args.stage, args.stage_args, args.address, args.working_dir, env, args.python,
                             args.submission_id, args.no_wait)
    print(render(command), flush=True)
    return subprocess.call(command) if args.run else 0


def router_specs(text: str, checkpoint: str | None) -> dict[str, dict]:
    """`--routers oracle,knn,mlc=PATH` -> {label: options}; a trained name without `=PATH` takes --checkpoint."""
    specs = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, path = item.partition("=")
        label = name if name not in specs else f"{name}#{len(specs) + 1}"  # two checkpoints of one kind
        specs[label] = {"router": name, "checkpoint": path or None}
    for spec in specs.values():
        if spec["checkpoint"] is None and spec["router"] in ("mlc", "lookahead-mlm", "lookahead-clm"):
            spec["checkpoint"] = checkpoint
    return specs


def cmd_frontier(args: argparse.Namespace) -> int:
    """Quality vs cost per router over a sweep of the cost weight; JSON, table and PNG in --out."""
    # heavy imports: off the CLI's start-up path
    from lookahead_ray.data.costs import load_cost_table
    from lookahead_ray.evaluation.evaluate import load_frame
    from lookahead_ray.evaluation.frontier import cost_grid, format_frontier, frontier_for, log_frontier, plot_frontier

    config = load_data_config(args.config)
    costs = load_cost_table(args.costs, config.candidates)
    options = {"seed": args.seed, "k": args.k}
    result = frontier_for(load_frame(args.data, config), router_specs(args.routers, args.checkpoint), args.split,
                          config, costs, args.tokens, options, cost_grid(args.grid_points))
    result["data"] = str(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = format_frontier(result)
    (out / "frontier.md").write_text(f"```\n{table}\n```\n")
    png = plot_frontier(result, out / "frontier.png")
    if not args.no_mlflow:
        result["mlflow_run_id"] = log_frontier(result, png, {"data": str(args.data), "split": args.split,
                                                             "costs": costs.source, "tokens": args.tokens})
    (out / "frontier.json").write_text(json.dumps(result, indent=2) + "\n")
    print(table)
    print(f"wrote {out}/frontier.json, frontier.md, frontier.png")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """The cost weight meeting a cost or quality target on --data; written to the Serve config."""
    from lookahead_ray.data.costs import load_cost_table  # heavy: off the CLI's start-up path
    from lookahead_ray.evaluation.evaluate import load_frame  # heavy: off the CLI's start-up path
    from lookahead_ray.evaluation.frontier import cost_grid, frontier_for  # heavy: off the CLI's start-up path

    kind = "cost_share" if args.target_cost_share is not None else "quality_share"
    target = check_target(kind, args.target_cost_share if kind == "cost_share" else args.target_quality_share)
    config = load_data_config(args.config)
    costs = load_cost_table(args.costs, config.candidates)
    specs = router_specs(args.router, args.checkpoint)
    if len(specs) != 1:
        raise ValueError(f"--router {args.router!r}: calibrate takes one router")
    result = frontier_for(load_frame(args.data, config), specs, args.split, config, costs, args.tokens,
                          {"seed": args.seed, "k": args.k}, cost_grid(args.grid_points))
    calibration = pick_weight(next(iter(result["routers"].values()))["points"], result["reference"], kind, target)
    if args.serve_config:
        listed = write_serve_config(args.serve_config, calibration["cost_weight"], args.set_default)
        calibration["serve_config"] = {"path": args.serve_config, "listed_cost_weights": listed}
    if args.checkpoint and args.checkpoint.startswith("models:/") and not args.no_mlflow:
        calibration["model_version"] = tag_model_version(args.checkpoint, calibration, str(args.data), args.split,
                                                         list(config.candidates))
    print(json.dumps(calibration, indent=2))
    return 0


def _cost_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="an imported dataset folder or a release folder")
    parser.add_argument("--split", default="test", choices=["test", "all", "val"],
                        help="test: the replay test split; all: every query of the test benchmarks; val: their val rows")
    parser.add_argument("--config", default=None, help="YAML with candidates, labels and split settings")
    parser.add_argument("--checkpoint", default=None, help="checkpoint of a trained router (folder or models:/...)")
    parser.add_argument("--costs", default=None,
                        help="cost table YAML (configs/costs-release.yaml) or a pool YAML; default: the release table")
    parser.add_argument("--tokens", default="smollm2", choices=["smollm2", "chars4"],
                        help="how responses are counted: SmolLM2's tokenizer, or characters / 4")
    parser.add_argument("--grid-points", type=int, default=101, help="cost weights swept over [0, 1]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random router")
    parser.add_argument("--k", type=int, default=10, help="neighbours of the knn router")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="an imported dataset folder or a release folder")
    parser.add_argument("--split", default="test", choices=["test", "all", "val"],
                        help="test: the replay test split; all: every query of the test benchmarks; val: their val rows")
    parser.add_argument("--config", default=None, help="YAML with candidates, labels and split settings")
    parser.add_argument("--json", default=None, help="write the result JSON here")
    parser.add_argument("--fit-data", default=None,
                        help="a dataset or release folder whose train rows (all rows if it has no train split) "
                             "kNN and best-single fit on, for --data folders that hold only evaluation queries")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random router")
    parser.add_argument("--k", type=int, default=10, help="neighbours of the knn router")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the run to MLflow")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lookahead-ray", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("import-release", help=cmd_import_release.__doc__)
    p.add_argument("path", help="a clone of the release (the folder holding compressed_data/)")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--config", default=None, help="YAML with candidates, labels and split settings")
    p.set_defaults(func=cmd_import_release)

    p = sub.add_parser("evaluate", help=cmd_evaluate.__doc__)
    p.add_argument("--router", required=True,
                   help="oracle | random | best-single | knn | fixed-<i> | mlc | lookahead-mlm | lookahead-clm")
    p.add_argument("--checkpoint", default=None, help="a trained router checkpoint")
    _data_arguments(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("heldout", help=cmd_heldout.__doc__)
    p.add_argument("--checkpoint", required=True,
                   help="a trained router: a folder, models:/<name>/<version> or models:/<name>/latest")
    p.add_argument("--data", required=True, help="a routing dataset folder (e.g. runs/demo/dataset)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="test (default): the prompts the router neither trained nor selected on")
    p.add_argument("--config", default=None, help="YAML with candidates and split settings (default: the dataset's)")
    p.add_argument("--json", default=None, help="write the table as JSON here")
    p.set_defaults(func=cmd_heldout)

    p = sub.add_parser("train", help=cmd_train.__doc__)
    p.add_argument("--router", default=None, choices=["mlc", "lookahead-mlm", "lookahead-clm"],
                   help="overrides the config's router")
    p.add_argument("--config", default=None, help="a TrainConfig YAML (configs/train-*.yaml)")
    p.add_argument("--data", default=None, help="overrides the config's dataset")
    p.add_argument("--max-steps", type=int, default=None, help="overrides the config's max_steps")
    p.add_argument("--name", default=None, help="run name (Ray Train folder and MLflow run)")
    p.add_argument("--address", default=None, help="Ray address (default: start or join a local Ray)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("mix", help=cmd_mix.__doc__)
    p.add_argument("--config", required=True, help="a TrainConfig YAML (configs/replay-*-cpu.yaml)")
    p.add_argument("--data", default=None, help="overrides the config's dataset")
    p.add_argument("--seed", type=int, default=None, help="overrides the config's seed (the draw)")
    p.add_argument("--json", default=None, help="write the summary JSON here")
    p.set_defaults(func=cmd_mix)

    p = sub.add_parser("bench", help=cmd_bench.__doc__)
    p.add_argument("name", choices=["replay"], help="which benchmark")
    p.add_argument("--data", default=None, help="a release folder or an imported dataset")
    p.add_argument("--merge", nargs="+", default=None, metavar="REPLAY_JSON",
                   help="no training: merge these replay.json files (seeds run by separate processes) into --out")
    p.add_argument("--seeds", type=int, default=1, help="repeat with seeds 0..n-1")
    p.add_argument("--seed-list", default=None,
                   help="run only these seeds, e.g. 1,2 (to split --seeds over processes; a later --seeds run "
                        "collects every finished run)")
    p.add_argument("--full", action="store_true", help="the paper's GPU settings (configs/replay-*-gpu.yaml)")
    p.add_argument("--routers", default=None, help="comma-separated subset of mlc,lookahead-mlm,lookahead-clm")
    p.add_argument("--out", default="benchmarks/results", help="folder for replay.json/.md/.png")
    p.add_argument("--runs", default="runs/replay", help="checkpoints go to RUNS/<router>/")
    p.add_argument("--configs", default="configs", help="folder of the replay-*.yaml configs")
    p.add_argument("--address", default=None, help="Ray address (default: start or join a local Ray)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("tune", help=cmd_tune.__doc__)
    p.add_argument("--space", required=True, help="a sweep YAML (tune/curriculum.yaml, tune/causal.yaml)")
    p.add_argument("--router", default=None, choices=["mlc", "lookahead-mlm", "lookahead-clm"],
                   help="overrides the sweep's router")
    p.add_argument("--config", default=None, help="a TrainConfig YAML replacing the sweep's base")
    p.add_argument("--data", default=None, help="overrides the dataset")
    p.add_argument("--num-samples", type=int, default=None, help="overrides the number of trials")
    p.add_argument("--address", default=None, help="Ray address (default: start or join a local Ray)")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("generate", help=cmd_generate.__doc__)
    p.add_argument("--pool", default="configs/pool-cpu.yaml", help="candidate pool YAML (default: the CPU demo pool)")
    p.add_argument("--prompts", required=True,
                   help="comma-separated sources NAME[:N]: demo, humaneval, mtbench, reasoning-gym/<dataset>, "
                        "gsm8k, math, mbpp, or a .jsonl/.parquet prompt file")
    p.add_argument("--out", required=True, help="output folder (rerun with the same folder to resume)")
    p.add_argument("--shard-size", type=int, default=16, help="prompts per shard, the unit of resume")
    p.add_argument("--batch-size", type=int, default=16, help="rows per engine batch")
    p.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16, for both engines")
    p.add_argument("--max-model-len", type=int, default=2048, help="vLLM context length")
    p.add_argument("--engine-restarts", type=int, default=2,
                   help="restarts of a dead engine actor before the job fails (Ray Data's default: forever)")
    p.add_argument("--address", default=None, help="Ray address (default: start or join a local Ray)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("grade", help=cmd_grade.__doc__)
    p.add_argument("--in", dest="in_dir", required=True, help="a generate output folder")
    p.add_argument("--out", required=True, help="output routing-dataset folder")
    p.add_argument("--reward-model", default=None,
                   help="HF id or path of a sequence-classification reward model (grades MT-Bench prompts)")
    p.add_argument("--workers", type=int, default=2, help="grading actors (each runs one sandbox at a time)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per code sample")
    p.add_argument("--config", default=None, help="YAML with labels and split settings")
    p.add_argument("--address", default=None, help="Ray address (default: start or join a local Ray)")
    p.set_defaults(func=cmd_grade)

    p = sub.add_parser("report", help=cmd_report.__doc__)
    p.add_argument("--routers", default="oracle,best-single,random,knn", help="comma-separated router names")
    _data_arguments(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("frontier", help=cmd_frontier.__doc__)
    p.add_argument("--routers", default="oracle,best-single,knn",
                   help="comma-separated: baselines, trained names (with --checkpoint) or NAME=CHECKPOINT")
    p.add_argument("--out", default="runs/frontier", help="folder for frontier.json/.md/.png")
    _cost_arguments(p)
    p.set_defaults(func=cmd_frontier)

    p = sub.add_parser("calibrate", help=cmd_calibrate.__doc__)
    p.add_argument("--router", required=True, help="one router: a baseline, or a trained name with --checkpoint")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-cost-share", type=float, help="spend at most this share of the best candidate's cost")
    target.add_argument("--target-quality-share", type=float, help="reach this share of the best candidate's quality")
    p.add_argument("--serve-config", default="deployments/config.yaml",
                   help="Serve config whose listed_cost_weights gets the weight ('' to write nothing)")
    p.add_argument("--set-default", action="store_true", help="also make it the config's default_cost_weight")
    _cost_arguments(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("submit", help=cmd_submit.__doc__)
    p.add_argument("stage", help="generate | grade | train | tune | bench | evaluate | report | import-release")
    p.add_argument("stage_args", nargs=argparse.REMAINDER, help="the stage's own arguments, unchanged")
    p.add_argument("--address", default=None, help="the cluster's dashboard (default: RAY_API_SERVER_ADDRESS or "
                   "http://127.0.0.1:8265, where `ray dashboard cluster.yaml` forwards it)")
    p.add_argument("--working-dir", default=".", help="uploaded to every node (configs/, tune/, pools)")
    p.add_argument("--tracking-uri", default=None, help="MLFLOW_TRACKING_URI of the jobs (http://<head>:5000)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="another env var of the job")
    p.add_argument("--python", default="python", help="the interpreter on the nodes that has lookahead-ray")
    p.add_argument("--submission-id", default=None, help="the job's id (default: Ray picks one)")
    p.add_argument("--no-wait", action="store_true", help="return once submitted; follow with `ray job logs -f`")
    p.add_argument("--run", action="store_true", help="run the command instead of only printing it")
    p.set_defaults(func=cmd_submit)
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "import-release": cmd_import_release,
    "evaluate": cmd_evaluate,
    "report": cmd_report,
    "train": cmd_train,
    "heldout": cmd_heldout,
    "tune": cmd_tune,
    "bench": cmd_bench,
    "generate": cmd_generate,
    "grade": cmd_grade,
    "frontier": cmd_frontier,
    "calibrate": cmd_calibrate,
    "submit": cmd_submit,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("alembic", "mlflow", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError) as err:
        print(f"lookahead-ray {args.command}: error: {err}", file=sys.stderr)
        if args.verbose or (isinstance(err, OSError) and not err.filename):
            # An OSError that names no file (e.g. a vanished working directory) says nothing alone.
            traceback.print_exc(file=sys.stderr)
        return 2
