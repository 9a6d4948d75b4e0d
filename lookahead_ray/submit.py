"""`lookahead-ray submit STAGE ...`: the `ray job submit` line that runs one stage on a Ray cluster.

A job outlives the SSH session that started it and has an id, logs and a status (`ray job status`,
`ray job logs --follow`, the dashboard). Its runtime_env carries the working directory (configs,
candidate pools, sweeps) to every node and the environment every worker and Serve replica needs:

    lookahead-ray submit train --config configs/replay-mlm-gpu.yaml --data s3://my-bucket/release
    -> ray job submit --address http://127.0.0.1:8265 --working-dir . \\
           --runtime-env-json '{"env_vars": {"MLFLOW_TRACKING_URI": "http://10.0.0.10:5000"}}' \\
           -- python -m lookahead_ray train --config configs/replay-mlm-gpu.yaml --data s3://my-bucket/release

The stage's own arguments follow STAGE unchanged; `--address auto` is added to stages that start
Ray, so that the job's driver joins the cluster instead of starting its own.
"""

from __future__ import annotations

import json
import os
import shlex

STAGES = ("generate", "grade", "train", "tune", "bench", "evaluate", "report", "import-release")
"""The subcommands a job can run."""
JOINS_RAY = ("generate", "grade", "train", "tune", "bench")
"""Stages with an --address flag: given `auto`, the job's driver joins the cluster it was submitted to."""
FORWARDED = ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "HF_HUB_OFFLINE")
"""Variables copied from the submitting shell into every worker when set there (no secrets: on a cloud
cluster credentials come from the instance role; elsewhere pass them with --env)."""
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
"""The dashboard as `ray dashboard cluster.yaml` forwards it to a laptop."""


def job_env(env: list[str], tracking_uri: str | None, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The runtime_env's env_vars: FORWARDED from `environ`, then `--tracking-uri`, then each KEY=VALUE.

    >>> job_env(["A=1"], "http://head:5000", {"HF_HUB_OFFLINE": "1", "HOME": "/x"})
    {'HF_HUB_OFFLINE': '1', 'MLFLOW_TRACKING_URI': 'http://head:5000', 'A': '1'}
    """
    environ = os.environ if environ is None else environ
    out = {name: environ[name] for name in FORWARDED if environ.get(name)}
    if tracking_uri:
        out["MLFLOW_TRACKING_URI"] = tracking_uri
    for item in env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--env: expected KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def submit_command(stage: str, stage_args: list[str], address: str | None = None, working_dir: str = ".",
                   env: dict[str, str] | None = None, python: str = "python", submission_id: str | None = None,
                   no_wait: bool = False) -> list[str]:
    """The `ray job submit` argv for one stage (see the module docstring)."""
    if stage not in STAGES:
        raise ValueError(f"submit: unknown stage {stage!r}; one of {', '.join(STAGES)}")
    args = list(stage_args)
    if stage in JOINS_RAY and "--address" not in args:
        args += ["--address", "auto"]  # the job's driver runs on the head: join that cluster
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or DEFAULT_ADDRESS
    command = ["ray", "job", "submit", "--address", address, "--working-dir", working_dir]
    if env:
        command += ["--runtime-env-json", json.dumps({"env_vars": env})]
    if submission_id:
        command += ["--submission-id", submission_id]
    if no_wait:
        command.append("--no-wait")
    return command + ["--", python, "-m", "lookahead_ray", stage, *args]


def render(command: list[str]) -> str:
    """One shell line, quoted so that it can be pasted."""
    return shlex.join(command)
