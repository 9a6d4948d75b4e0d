"""MLflow set-up: a local sqlite store by default, MLFLOW_TRACKING_URI overrides it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DB}"


def use_experiment(name: str) -> str:
    """Point MLflow at the store and select (creating if needed) experiment `name`; returns its id.

    A new experiment on the default sqlite store keeps its artifacts in ./mlartifacts.
    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        location = None
        if "MLFLOW_TRACKING_URI" not in os.environ:
            location = (Path.cwd() / DEFAULT_ARTIFACTS).as_uri()
        experiment_id = mlflow.create_experiment(name, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def flat_metrics(result: dict[str, Any]) -> dict[str, float]:
    """Numeric fields of an evaluation result as MLflow metric names, e.g. `GSM8K/score`."""
    out = {}
    for benchmark, entry in result["benchmarks"].items():
        for key in ("score", "oracle", "random", "best_single", "normalized", "routing_accuracy"):
            out[f"{benchmark}/{key}"] = float(entry[key])
        for candidate, share in entry["pick_share"].items():
            out[f"{benchmark}/pick_share/{candidate}"] = float(share)
    for key, value in result["average"].items():
        out[f"average/{key}"] = float(value)
    return out


def log_evaluation(result: dict[str, Any], params: dict[str, Any]) -> str:
    """Log one evaluate run (params, metrics, the JSON as an artifact); returns the run id."""
    import mlflow

    use_experiment("lookahead-ray-evaluate")
    with mlflow.start_run(run_name=f"evaluate-{result['router']}") as run:
        mlflow.log_params({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in params.items()})
        mlflow.log_metrics(flat_metrics(result))
        mlflow.log_dict(result, "evaluation.json")
        return run.info.run_id
