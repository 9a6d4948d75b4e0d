"""The MLflow Model Registry side of the checkpoint contract: register a trained router with its
candidate pool, and resolve a `models:/<name>/<version|latest>` source back to a checkpoint folder.

A registered version carries two tags: `candidates` (the pool's names in score order, as JSON) and
`router` (its kind). `latest` means the newest version trained for the asking pool, so a Serve app
never loads a router whose scores are in another pool's order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lookahead_ray.routers.checkpoint import SPEC_FILE
from lookahead_ray.tracking import tracking_uri


def resolve_checkpoint(source: str) -> str:
    """A local checkpoint folder for `source`: a folder, or `models:/<name>/<version>` from MLflow."""
    if source.startswith("models:/"):
        import mlflow  # heavy: imported when a registry is asked, not when the CLI starts

        mlflow.set_tracking_uri(tracking_uri())
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source))
        found = sorted(local.rglob(SPEC_FILE))
        if not found:
            raise FileNotFoundError(f"{source}: the model version holds no router checkpoint ({SPEC_FILE})")
        return str(found[0].parent)
    if not Path(source).is_dir():
        raise FileNotFoundError(f"{source}: no such checkpoint folder")
    return source


def resolve_registered(source: str, pool_names: list[str], uri: str) -> tuple[str, str]:
    """(`models:/<name>/<version>`, router kind) of `source` (version or `latest`), after checking that
    the version was trained for exactly `pool_names` (names and order)."""
    name, _, version = source[len("models:/"):].partition("/")
    if not name or not version:
        raise ValueError(f"router {source!r}: expected models:/<name>/<version|latest>")
    import mlflow  # heavy: imported when a registry is asked, not when the CLI starts

    client = mlflow.MlflowClient(uri)
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except Exception as err:
        raise ValueError(f"router {source!r}: cannot read the registry at {uri}: {err}") from err
    if not versions:
        raise ValueError(f"router {source!r}: no model {name!r} is registered in {uri}; run `make demo` "
                         "(it trains and registers one), or name a checkpoint folder instead")
    by_version = sorted(versions, key=lambda v: int(v.version), reverse=True)
    if version == "latest":
        fitting = [v for v in by_version if json.loads(v.tags.get("candidates", "null") or "null") == pool_names]
        if not fitting:
            seen = sorted({v.tags.get("candidates", "?") for v in by_version})
            raise ValueError(f"router {source!r}: no version of {name!r} was trained for the pool {pool_names} "
                             f"(names and order); registered pools: {seen}")
        chosen = fitting[0]
    else:
        chosen = next((v for v in by_version if v.version == version), None)
        if chosen is None:
            raise ValueError(f"router {source!r}: {name!r} has no version {version}")
        trained_for = json.loads(chosen.tags.get("candidates", "null") or "null")
        if trained_for != pool_names:
            raise ValueError(f"router {source!r} was trained for candidates {trained_for}, but the pool has "
                             f"{pool_names}: names and order must match")
    kind = chosen.tags.get("router") or "router"
    return f"models:/{name}/{chosen.version}", kind


def resolve_latest(source: str, pool_names: list[str]) -> str:
    """`models:/<name>/latest` -> the newest version trained for `pool_names`; any other source as is."""
    if source.startswith("models:/") and source.endswith("/latest"):
        return resolve_registered(source, pool_names, tracking_uri())[0]
    return source


def register_router(run_id: str, checkpoint_dir: str, metrics: dict[str, Any], cfg) -> str | None:
    """Log the best checkpoint as a pyfunc model (the checkpoint folder is its artifact) and register
    it with its candidate pool if `cfg.register_as`. Returns `models:/<name>/<version>` or None."""
    import mlflow  # heavy: imported when a router is registered, not when the CLI starts

    from lookahead_ray.routers.pyfunc import RouterModel  # mlflow.pyfunc: off the CLI's start-up path

    mlflow.set_tracking_uri(tracking_uri())
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"best/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        mlflow.log_dict({"candidates": list(cfg.data.candidates), "router": cfg.router}, "candidate_pool.json")
        info = mlflow.pyfunc.log_model(
            name="router",
            python_model=RouterModel(),
            artifacts={"checkpoint": checkpoint_dir},
            pip_requirements=["lookahead-ray"],
            registered_model_name=cfg.register_as or None,
        )
    if not cfg.register_as:
        return None
    version = info.registered_model_version
    client = mlflow.MlflowClient()
    client.set_model_version_tag(cfg.register_as, version, "candidates", json.dumps(list(cfg.data.candidates)))
    client.set_model_version_tag(cfg.register_as, version, "router", cfg.router)
    return f"models:/{cfg.register_as}/{version}"
