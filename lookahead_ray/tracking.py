"""MLflow set-up: a local sqlite store by default, MLFLOW_TRACKING_URI overrides it.

On a cluster, MLFLOW_TRACKING_URI=http://<head>:5000 names the `mlflow server` that cluster.yaml
starts on the head; it stores artifacts (checkpoints of registered models) on shared storage and
serves them over HTTP, so a Train worker or Serve replica on any node reads and writes the same runs.
`check_tracking` fails a job at its start when that server does not answer or when a file store
would be a different, empty database on the other nodes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.error import URLError

from lookahead_ray.config import to_dict
from lookahead_ray.storage import check_shared

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DB}"


def check_tracking(uri: str | None = None, timeout_s: float = 10.0) -> str:
    """`uri` (default: tracking_uri()) if a job can log to it from every node; else a ValueError naming
    MLFLOW_TRACKING_URI and the fix. Call it before training, not after."""
    from urllib.request import urlopen  # loads http.client and ssl: off the CLI's start-up path

    uri = uri or tracking_uri()
    if uri.startswith(("http://", "https://")):
        try:
            with urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as answer:
                answer.read()
        except (URLError, OSError) as err:
            raise ValueError(f"MLFLOW_TRACKING_URI={uri}: no MLflow server answers ({err}); start it "
                             "(cluster.yaml runs `mlflow server --host 0.0.0.0 --port 5000` on the head; "
                             "`ray attach cluster.yaml -p 5000` shows its UI), fix the host and port, or "
                             "unset MLFLOW_TRACKING_URI to log into the local sqlite store") from None
    elif uri.startswith(("sqlite:///", "file:")) or "://" not in uri:
        check_file_store_shared(uri)
    return uri


def check_file_store_shared(uri: str) -> None:
    """On a connected multi-node Ray, a sqlite file or ./mlruns folder must be on storage every node sees."""
    import ray  # heavy: off the CLI's start-up path

    if not ray.is_initialized():
        return
    path = Path(uri[len("sqlite:///"):]).parent if uri.startswith("sqlite:///") else uri.removeprefix("file://")
    check_shared(path, "MLFLOW_TRACKING_URI", fix="start the tracking server on the head (cluster.yaml) and set "
                 "MLFLOW_TRACKING_URI=http://<head>:5000 in the job's runtime_env (`ray job submit "
                 "--runtime-env-json '{\"env_vars\": {\"MLFLOW_TRACKING_URI\": ...}}'`, or `lookahead-ray submit`)")


def use_experiment(name: str) -> str:
    """Point MLflow at the store and select (creating if needed) experiment `name`; returns its id.

    A new experiment on the default sqlite store keeps its artifacts in ./mlartifacts.
    """
    import mlflow  # heavy: off the CLI's start-up path

    uri = tracking_uri()
    default_store = uri == f"sqlite:///{Path.cwd() / DEFAULT_DB}"  # (set_tracking_uri exports the env var)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        location = (Path.cwd() / DEFAULT_ARTIFACTS).as_uri() if default_store else None
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
    import mlflow  # heavy: off the CLI's start-up path

    use_experiment("lookahead-ray-evaluate")
    with mlflow.start_run(run_name=f"evaluate-{result['router']}") as run:
        mlflow.log_params({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in params.items()})
        mlflow.log_metrics(flat_metrics(result))
        mlflow.log_dict(result, "evaluation.json")
        return run.info.run_id


def start_training_run(cfg) -> str:
    """Open (and leave) a run for one training: the workers log into it by id; returns the id."""
    import mlflow  # heavy: off the CLI's start-up path

    use_experiment(cfg.experiment)
    flat = _flatten(to_dict(cfg))
    with mlflow.start_run(run_name=cfg.name or cfg.router) as run:
        mlflow.log_params({k: json.dumps(v) if isinstance(v, (list, tuple, dict)) else v for k, v in flat.items()})
        mlflow.set_tag("router", cfg.router)
        return run.info.run_id


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


