"""`serve run deployments:app` serves the Lookahead app; `serve run deployments/config.yaml` does the same
with replicas, resources and arguments from YAML.

`app` is an application builder (Serve calls it with the config's `args`, or `key=value` pairs of
`serve run`), so importing this module starts nothing. With no arguments it serves
configs/pool-cpu.yaml and the router `make demo` registered for it. This folder is installed with
the package (pyproject.toml), so a cluster node that has lookahead-ray installed but not this
checkout imports `deployments:app` too (deployments/gpu.yaml does).
"""

from lookahead_ray.serving.app import AppArgs, app, build_app

__all__ = ["AppArgs", "app", "build_app"]
