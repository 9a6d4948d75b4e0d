"""`serve run deployments:app` serves the Lookahead app; `serve run deployments/config.yaml` does the same
with replicas, resources and arguments from YAML.

`app` is an application builder (Serve calls it with the config's `args`, or `key=value` pairs of
`serve run`), so importing this module starts nothing. With no arguments it serves
configs/pool-cpu.yaml and the router `make demo` registered for it (see lookahead_ray/serving/app.py).
"""

# No `from __future__ import annotations`: Serve reads the real AppArgs annotation to validate the args.
from lookahead_ray.serving.app import AppArgs, build_app


def app(args: AppArgs):
    return build_app(args)
