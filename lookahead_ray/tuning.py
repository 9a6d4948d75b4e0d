"""Tune sweeps of a router's training config: Optuna search, ASHA, every trial is `build_trainer()`.

A sweep file (`tune/curriculum.yaml`, `tune/causal.yaml`) is a serialised `SweepConfig`: a base
TrainConfig YAML, fixed overrides for every trial, and a search space shaped like the TrainConfig,
each searched field a one-key mapping:

    space:
      curriculum: {r0: {uniform: [0.0, 0.6]}, shape: {choice: [linear, cosine, step]}}
      lr: {loguniform: [2.0e-5, 3.0e-4]}

A `grid: [...]` leaf tries every listed value (Tune's grid_search), each `num_samples` times; a space
with a grid leaf is sampled by Tune's BasicVariantGenerator instead of Optuna, which cannot take a grid.
Use it for a few values of one field: Optuna's 4 draws from [0, 0.5] may all land near the middle.

`run_sweep` then:
1. selects MLflow experiment `lookahead-ray-tune-<router>` (created here, so that nothing logs into
   whatever experiment happens to be active) and opens the sweep's parent run;
2. fits a `Tuner` over `run_trial`: each trial opens a child run (tags `sweep`, `trial_id`,
   `mlflow.parentRunId`), builds the TorchTrainer with `build_trainer()` exactly as
   `lookahead-ray train` does, adds Ray's `TuneReportCallback` so that every evaluation the workers
   report reaches Tune (ASHA stops trials on it), and fits it; the workers log their per-step
   curves into the child run;
3. plots every trial into its run (curriculum rate vs step, val score vs step, pick share per
   candidate on val, scored with the trial's best checkpoint);
4. writes the best trial's TrainConfig as YAML, retrains it with `training.trainer.train()`
   (which registers the best checkpoint with its candidate pool) and closes the parent run.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lookahead_ray.config import TrainConfig, from_dict, load_train_config, to_dict
from lookahead_ray.storage import check_reachable, check_shared, is_uri, join, local_path, ray_storage, resolve
from lookahead_ray.tracking import check_tracking, start_training_run, tracking_uri, use_experiment
from lookahead_ray.tuning_plots import log_trial_plots

DOMAINS = ("uniform", "loguniform", "choice", "randint", "grid")
LISTS = ("choice", "grid")  # domains that take a list of values, not [low, high]
# Fields a router ignores: searching them would only add noise to the sweep.
UNUSED_BY = {
    "mlc": ("curriculum", "block_len", "aux_weight", "aux_ramp_ratio", "max_response_len", "id_token_noise",
            "routing_head"),
    "lookahead-mlm": ("max_response_len", "id_token_noise", "routing_head"),
    "lookahead-clm": ("curriculum", "block_len"),
}


@dataclass(frozen=True)
class SweepConfig:
    """One Tune sweep (`lookahead-ray tune --space FILE.yaml`); the YAML file is a serialised instance."""

    space: dict[str, Any]
    """Searched TrainConfig fields, nested like the TrainConfig; each leaf {uniform|loguniform|choice|randint|grid: [...]}."""
    base: str | None = None
    """The TrainConfig YAML every trial starts from, relative to the sweep file (`--config` overrides)."""
    train: dict[str, Any] = field(default_factory=dict)
    """TrainConfig fields fixed for every trial and the retrain (small steps for a CPU sweep, say)."""
    metric: str = "val_score"
    """What the workers report at each evaluation and Tune optimises."""
    mode: str = "max"
    num_samples: int = 4
    """Trials Optuna proposes; with a grid leaf, how many times the whole grid runs."""
    max_concurrent_trials: int = 2
    """Trials in flight at once: each is one Ray Train run competing for the same CPUs/GPUs."""
    grace_period: int = 1
    """ASHA: evaluations every trial gets before it may be stopped."""
    reduction_factor: int = 2
    """ASHA: 1 / reduction_factor of the trials reaching a rung continue past it."""
    seed: int = 0
    """Seed of Optuna's sampler."""
    driver_memory_mb: int = 256
    """Memory held by each trial's driver, which only launches and watches its Train run: it holds no CPU, so
    the Train workers get every CPU (with 0.01 CPU per driver, 2 trials on 2 CPUs would leave 0.98 for a worker)."""
    retrain: bool = True
    """Retrain the best config after the sweep and register its best checkpoint."""
    storage_path: str = "runs/tune"
    """Tune's results, the trials' Ray Train runs and best.yaml go under <storage_path>/<sweep name>/: a local
    path on one machine; on a multi-node cluster s3://<bucket>/<prefix>, gs://... or an NFS path (storage.py)."""

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be max or min, got {self.mode!r}")
        for name in ("num_samples", "max_concurrent_trials", "grace_period"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.reduction_factor < 2:
            raise ValueError(f"reduction_factor must be >= 2, got {self.reduction_factor}")
        if not isinstance(self.space, dict) or not self.space:
            raise ValueError("space: expected a non-empty mapping of TrainConfig fields to search")
        for path, leaf in leaves(self.space):
            check_domain(path, leaf)

    def grid_size(self) -> int:
        """Points of the grid (1 without a grid leaf)."""
        return math.prod(len(leaf["grid"]) for _, leaf in leaves(self.space) if "grid" in leaf)

    def trial_count(self) -> int:
        """Trials the sweep runs: Tune repeats the whole grid num_samples times."""
        return self.num_samples * self.grid_size()

    def has_grid(self) -> bool:
        return any("grid" in leaf for _, leaf in leaves(self.space))


def leaves(space: dict[str, Any], prefix: str = "") -> list[tuple[str, dict]]:
    """[(dotted path, domain mapping)] of a nested space.

    >>> leaves({"lr": {"uniform": [1, 2]}, "curriculum": {"r0": {"choice": [0.1, 0.3]}}})
    [('lr', {'uniform': [1, 2]}), ('curriculum.r0', {'choice': [0.1, 0.3]})]
    """
    out = []
    for key, value in space.items():
        if is_domain(value):
            out.append((f"{prefix}{key}", value))
        elif isinstance(value, dict):
            out += leaves(value, f"{prefix}{key}.")
        else:
            raise ValueError(f"space.{prefix}{key}: expected a mapping like {{uniform: [low, high]}}, got {value!r}")
    return out


def is_domain(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in DOMAINS


def check_domain(path: str, leaf: dict) -> None:
    kind, args = next(iter(leaf.items()))
    if not isinstance(args, list) or not args:
        raise ValueError(f"space.{path}: {kind} needs a list, got {args!r}")
    if kind not in LISTS and (len(args) != 2 or not args[0] < args[1]):
        raise ValueError(f"space.{path}: {kind} needs [low, high] with low < high, got {args}")
    if kind == "loguniform" and args[0] <= 0:
        raise ValueError(f"space.{path}: loguniform needs low > 0, got {args}")


def tune_space(space: dict[str, Any]) -> dict[str, Any]:
    """The same nesting with Tune domains at the leaves (OptunaSearch converts them)."""
    from ray import tune  # heavy: off the CLI's start-up path

    out = {}
    for key, value in space.items():
        if is_domain(value):
            kind, args = next(iter(value.items()))
            if kind == "grid":
                out[key] = tune.grid_search(args)
            else:
                out[key] = tune.choice(args) if kind == "choice" else getattr(tune, kind)(*args)
        else:
            out[key] = tune_space(value)
    return out


def corner(space: dict[str, Any], end: int) -> dict[str, Any]:
    """Every leaf at its first (end=0) or last (end=-1) value: used to check the space early."""
    return {k: next(iter(v.values()))[end] if is_domain(v) else corner(v, end) for k, v in space.items()}


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`base` with `update` on top, nested mappings merged key by key.

    >>> merge({"lr": 1, "curriculum": {"r0": 0.3, "shape": "linear"}}, {"curriculum": {"r0": 0.5}})
    {'lr': 1, 'curriculum': {'r0': 0.5, 'shape': 'linear'}}
    """
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def plain(value: Any) -> Any:
    """Tuples to lists, recursively, for YAML and JSON."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def load_sweep(path: str | Path, router: str | None = None, config: str | None = None,
               dataset: str | None = None, num_samples: int | None = None) -> tuple[SweepConfig, TrainConfig]:
    """The sweep of `path` and the TrainConfig its trials start from (router and data overridden)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read sweep: {err}") from err
    if num_samples is not None:
        raw["num_samples"] = num_samples
    sweep = from_dict(SweepConfig, raw, str(path))
    base_path = config or (str(path.parent / sweep.base) if sweep.base else None)
    overrides = {**sweep.train, **{k: v for k, v in {"router": router, "dataset": dataset}.items() if v is not None}}
    base = load_train_config(base_path, **overrides)
    check_space(sweep, base)
    return sweep, base


def check_space(sweep: SweepConfig, base: TrainConfig) -> None:
    """Raise before any trial starts if a searched field is unknown, unused by the router, or invalid."""
    for path, _ in leaves(sweep.space):
        if path.split(".")[0] in UNUSED_BY[base.router]:
            raise ValueError(f"space.{path}: {base.router} does not use {path.split('.')[0]} "
                             f"(searched fields must change the run; tune/causal.yaml is the sweep for lookahead-clm)")
    for end in (0, -1):
        trial_config(base, corner(sweep.space, end))


def trial_config(base: TrainConfig, params: dict[str, Any], **fields: Any) -> TrainConfig:
    """`base` with a trial's sampled `params` (nested like the TrainConfig) and plain `fields` set."""
    values = merge(plain(to_dict(base)), {**params, **fields})
    return from_dict(TrainConfig, values, "trial config")


def experiment_name(router: str) -> str:
    return f"lookahead-ray-tune-{router}"


@dataclass
class SweepOutcome:
    name: str
    experiment: str
    parent_run_id: str
    trials: list[dict[str, Any]]
    """One row per trial: trial_id, run_id, params, best metric, evaluations, stopped early or not."""
    best_trial: str
    best_config: str
    """Path of the best trial's TrainConfig YAML."""
    best_metric: float
    retrain_run_id: str | None = None
    registered: str | None = None
    """`models:/<name>/<version>` of the retrained router."""


def start_ray(address: str | None) -> None:
    """Join the Ray cluster at `address` (or RAY_ADDRESS); without either, start a local Ray with its
    dashboard on a free port.

    When a Train run ends, Train V2's PlacementGroupCleaner (a detached actor) watches its controller
    through the state API and frees the placement group if the controller died (ASHA stopping a trial).
    Left alone it resolves the cluster itself: on a machine with several Ray instances that finds the
    wrong one or fails ("Found multiple active Ray instances"), the CPUs stay reserved and the sweep
    hangs. So every worker is told this cluster's address: the dashboard's (RAY_API_SERVER_ADDRESS) for
    a local Ray, the GCS address (RAY_ADDRESS) for a joined one; an ambiguous `auto` fails here.
    """
    import socket  # stdlib, but only a local Ray's port probe needs it: off the CLI's start-up path

    import ray  # heavy: off the CLI's start-up path

    address = address or os.environ.get("RAY_ADDRESS")  # `ray job submit` gives its driver RAY_ADDRESS
    if address is None:
        from ray._private.services import canonicalize_bootstrap_address  # heavy: off the CLI's start-up path

        address = canonicalize_bootstrap_address(None)  # a `ray start` cluster ray.init() would join, or None
    if address not in (None, "local"):  # `local`, as ray.init takes it: always a new local Ray
        gcs = cluster_address(address)
        ray.init(address=gcs, runtime_env={"env_vars": {"RAY_ADDRESS": gcs}})
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}
    ray.init(include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port, runtime_env={"env_vars": env})


def cluster_address(address: str) -> str:
    """`host:port` of the GCS that `address` (host:port, auto) names; ValueError naming --address if none
    or several clusters answer to `auto`."""
    from ray._private.services import canonicalize_bootstrap_address_or_die  # heavy: off the CLI's start-up path

    try:
        return canonicalize_bootstrap_address_or_die(address)
    except ConnectionError as err:
        raise ValueError(f"--address {address}: {err} Pass the sweep's cluster explicitly: --address <head-ip>:6379 "
                         "(or RAY_ADDRESS=<head-ip>:6379)") from None


def run_sweep(sweep: SweepConfig, base: TrainConfig) -> SweepOutcome:
    """Run the whole sweep on the connected Ray cluster; see the module docstring."""
    import mlflow  # heavy: off the CLI's start-up path

    from lookahead_ray.training.data import training_frames  # heavy (pandas): off the CLI's start-up path
    from lookahead_ray.training.loop import total_steps  # heavy (torch): off the CLI's start-up path

    check_reachable(sweep.storage_path, "storage_path")  # fail now, not when the first trial reports
    check_shared(sweep.storage_path, "storage_path")
    check_tracking()
    train_rows, val_rows = training_frames(base)
    name = f"{base.router}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = sweep.storage_path if is_uri(sweep.storage_path) else str(local_path(sweep.storage_path))
    root = join(storage, name)
    base = trial_config(base, {}, experiment=experiment_name(base.router), storage_path=join(root, "train"))
    context = {"uri": tracking_uri(), "experiment_id": use_experiment(base.experiment), "sweep": name,
               "steps": total_steps(len(train_rows), base)}
    context["parent_run_id"] = open_parent_run(sweep, base, context)
    print(f"[tune] sweep {name}: {sweep.trial_count()} trials of {base.router}, {len(train_rows)} train / "
          f"{len(val_rows)} val prompts, {context['steps']} steps each; MLflow experiment {base.experiment}, "
          f"parent run {context['parent_run_id']} at {context['uri']}", flush=True)  # the URI: where to look
    client = mlflow.MlflowClient(context["uri"])
    try:
        results = fit_tuner(sweep, base, context, train_rows, val_rows, name)
        trials = record_trials(results, sweep, base, context, val_rows)
        best = min(trials, key=lambda t: -t["best"] if sweep.mode == "max" else t["best"])
        best_cfg = trial_config(base, best["params"], name=f"{name}-best")
        outcome = SweepOutcome(name, base.experiment, context["parent_run_id"], trials, best["trial_id"],
                               write_config(best_cfg, join(root, "best.yaml")), best["best"])
        if sweep.retrain:
            retrain(best_cfg, outcome, context)
        close_parent_run(client, outcome, sweep)
    except BaseException:
        client.set_terminated(context["parent_run_id"], "FAILED")
        raise
    return outcome


def evaluations_per_trial(base: TrainConfig, steps: int) -> int:
    """Reports of a trial that runs to the end: ASHA's max_t."""
    return max(1, math.ceil(steps / base.evaluation_interval(steps)))


def fit_tuner(sweep: SweepConfig, base: TrainConfig, context: dict, train_rows, val_rows, name: str):
    """Tuner(OptunaSearch, or BasicVariantGenerator for a grid, + ASHA) over `run_trial`; returns the ResultGrid."""
    # heavy imports: off the CLI's start-up path
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    max_t = evaluations_per_trial(base, context["steps"])
    trainable = tune.with_parameters(run_trial, base=plain(to_dict(base)), context=context,
                                     train_rows=train_rows, val_rows=val_rows)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"CPU": 0, "memory": sweep.driver_memory_mb * 2**20}),
        param_space=tune_space(sweep.space),
        tune_config=tune.TuneConfig(
            metric=sweep.metric, mode=sweep.mode, num_samples=sweep.num_samples,
            max_concurrent_trials=None if sweep.has_grid() else sweep.max_concurrent_trials,  # a grid's generator holds it
            search_alg=search_algorithm(sweep),
            scheduler=ASHAScheduler(max_t=max_t, grace_period=min(sweep.grace_period, max_t),
                                    reduction_factor=sweep.reduction_factor),
        ),
        run_config=tune.RunConfig(name=name, **ray_storage(sweep.storage_path)),
    )
    return tuner.fit()


def search_algorithm(sweep: SweepConfig):
    """Optuna for ranges; Tune's own generator for a grid (Optuna cannot expand grid_search). Both seeded."""
    if sweep.has_grid():
        from ray.tune.search import BasicVariantGenerator  # heavy: off the CLI's start-up path

        # Tune ignores TuneConfig.max_concurrent_trials for a generator instance (it warns and starts every
        # trial at once, which on a small machine starves the Train workers): the generator holds the limit.
        return BasicVariantGenerator(random_state=sweep.seed, max_concurrent=sweep.max_concurrent_trials)
    from ray.tune.search.optuna import OptunaSearch  # heavy: off the CLI's start-up path

    return OptunaSearch(seed=sweep.seed)


def run_trial(config: dict, base: dict, context: dict, train_rows=None, val_rows=None) -> None:
    """One Tune trial: `base` with the sampled `config`, fitted by the same build_trainer() as `train`."""
    # heavy imports: off the CLI's start-up path
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from lookahead_ray.training.trainer import build_trainer

    trial_id = tune.get_context().get_trial_id()
    cfg = trial_config(from_dict(TrainConfig, base, "base"), config, name=f"trial-{trial_id}")
    os.environ["MLFLOW_TRACKING_URI"] = context["uri"]  # a trial's cwd is its own folder, not the driver's
    run_id = start_training_run(cfg)
    tag_run(context, run_id, trial_id=trial_id, kind="trial")
    trainer = build_trainer(cfg, train_rows, val_rows, {"mlflow_run_id": run_id, "mlflow_uri": context["uri"]})
    trainer.run_config.callbacks.append(TuneReportCallback())  # each ray.train.report also reaches Tune
    trainer.fit()


def tag_run(context: dict, run_id: str, **tags: str) -> None:
    """Group a run under its sweep: tag `sweep` and MLflow's parent-run tag (nested in the UI)."""
    import mlflow  # heavy: off the CLI's start-up path

    client = mlflow.MlflowClient(context["uri"])
    for key, value in {"sweep": context["sweep"], "mlflow.parentRunId": context["parent_run_id"], **tags}.items():
        client.set_tag(run_id, key, value)


def open_parent_run(sweep: SweepConfig, base: TrainConfig, context: dict) -> str:
    """The sweep's parent run, left RUNNING until the sweep ends: its settings, space and base config."""
    import mlflow  # heavy: off the CLI's start-up path

    client = mlflow.MlflowClient(context["uri"])
    run = client.create_run(context["experiment_id"], run_name=context["sweep"],
                            tags={"sweep": context["sweep"], "router": base.router, "kind": "sweep"})
    run_id = run.info.run_id
    for key, value in dataclasses.asdict(sweep).items():
        client.log_param(run_id, f"sweep.{key}", json.dumps(value) if isinstance(value, dict) else value)
    client.log_dict(run_id, plain(to_dict(base)), "base_config.json")
    return run_id


def record_trials(results, sweep: SweepConfig, base: TrainConfig, context: dict, val_rows) -> list[dict]:
    """One summary row per finished trial; its plots and summary metrics go into its MLflow run."""
    import mlflow  # heavy: off the CLI's start-up path

    client = mlflow.MlflowClient(context["uri"])
    filesystem = resolve(base.storage_path, "storage_path")[0]  # where the trials' checkpoints are
    planned = evaluations_per_trial(base, context["steps"])
    trials = []
    for result in results:
        if result.error is not None or not result.metrics or sweep.metric not in result.metrics:
            print(f"[tune] trial {result.path} failed: {result.error}", flush=True)
            continue
        row = trial_summary(result, sweep, client, context, planned, filesystem)
        if row["run_id"] is not None:
            log_trial_plots(client, row, trial_config(base, row["params"]), context["steps"], val_rows, filesystem)
        trials.append(row)
    if not trials:
        raise RuntimeError(f"sweep {context['sweep']}: every trial failed")
    return trials


def trial_summary(result, sweep: SweepConfig, client, context: dict, planned: int, filesystem) -> dict[str, Any]:
    """The trial's id, MLflow run, params, best reported metric, its checkpoint (a path in `filesystem`),
    and whether ASHA stopped it."""
    from pyarrow import fs  # heavy: off the CLI's start-up path

    frame = result.metrics_dataframe
    is_dir = lambda p: isinstance(p, str) and filesystem.get_file_info(p).type == fs.FileType.Directory  # noqa: E731
    kept = frame[frame["checkpoint_path"].map(is_dir)]
    frame = kept if len(kept) else frame  # Train keeps the 3 best checkpoints; ties may drop the first
    index = frame[sweep.metric].idxmax() if sweep.mode == "max" else frame[sweep.metric].idxmin()
    best = frame.loc[index]
    trial_id = str(result.metrics["trial_id"])
    query = f"tags.sweep = '{context['sweep']}' and tags.trial_id = '{trial_id}'"
    found = client.search_runs([context["experiment_id"]], query)
    return {
        "trial_id": trial_id,
        "run_id": found[0].info.run_id if found else None,
        "params": result.config,
        "best": float(best[sweep.metric]),
        "best_step": int(best["step"]),
        "checkpoint": best["checkpoint_path"] if len(kept) else None,
        "evaluations": int(result.metrics["training_iteration"]),
        "stopped_early": int(result.metrics["training_iteration"]) < planned,
    }


def write_config(cfg: TrainConfig, location: str) -> str:
    """`cfg` as YAML at a local path or URI: `lookahead-ray train --config PATH` reproduces the run."""
    filesystem, path = resolve(location, "storage_path")
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    header = "# The best trial's TrainConfig, written by `lookahead-ray tune`.\n"
    with filesystem.open_output_stream(path) as out:
        out.write((header + yaml.safe_dump(plain(to_dict(cfg)), sort_keys=False)).encode())
    return location


def retrain(cfg: TrainConfig, outcome: SweepOutcome, context: dict) -> None:
    """Train the best config again from scratch, as `lookahead-ray train` would, and register it."""
    from lookahead_ray.training.trainer import train  # heavy (mlflow, torch): off the CLI's start-up path

    print(f"[tune] retraining the best config ({outcome.best_config})", flush=True)
    result = train(cfg)
    tag_run(context, result.mlflow_run_id, kind="retrain", best_trial=outcome.best_trial)
    outcome.retrain_run_id, outcome.registered = result.mlflow_run_id, result.registered


def close_parent_run(client, outcome: SweepOutcome, sweep: SweepConfig) -> None:
    run_id = outcome.parent_run_id
    best = next(t for t in outcome.trials if t["trial_id"] == outcome.best_trial)
    client.log_metric(run_id, f"best/{sweep.metric}", outcome.best_metric)
    for key, value in flat(best["params"]).items():
        client.log_param(run_id, f"best.{key}", value)
    client.log_text(run_id, config_text(outcome.best_config), "best.yaml")  # best_config may be in a bucket
    client.log_dict(run_id, plain(outcome.trials), "trials.json")
    client.set_tag(run_id, "best_trial", outcome.best_trial)
    if outcome.registered:
        client.set_tag(run_id, "registered", outcome.registered)
    client.set_terminated(run_id, "FINISHED")


def config_text(location: str) -> str:
    filesystem, path = resolve(location, "storage_path")
    with filesystem.open_input_stream(path) as source:
        return source.read().decode()


def flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"curriculum": {"r0": 0.3}} -> {"curriculum.r0": 0.3}."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out
