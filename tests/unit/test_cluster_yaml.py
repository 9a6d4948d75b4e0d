"""cluster.yaml passes Ray's own offline validation (no cloud calls), its `local` variant too."""

import copy
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster.yaml"
LOCAL_MARKER = "# provider:\n#   type: local"


def prepared(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(config))
    validate_config(config)
    return config


def test_cluster_yaml_is_a_valid_aws_gpu_cluster():
    config = prepared(yaml.safe_load(CLUSTER.read_text()))
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    assert config["head_node_type"] == "head" and types["head"]["max_workers"] == 0
    gpu = types["gpu_worker"]
    assert gpu["min_workers"] == 0 < gpu["max_workers"] <= config["max_workers"]  # autoscaling
    assert gpu["node_config"]["InstanceType"].startswith(("g", "p"))  # an AWS GPU family
    assert any('[gpu]"' in command for command in config["setup_commands"])
    assert config["file_mounts"]["~/lookahead-ray"] == "."  # configs/ and the candidate pools travel with it
    assert (REPO / "configs" / "pool-cpu.yaml").is_file()


def test_the_commented_local_variant_is_valid_too():
    text = CLUSTER.read_text()
    assert LOCAL_MARKER in text
    block = text[text.index(LOCAL_MARKER):]
    local = yaml.safe_load("\n".join(line[2:] for line in block.splitlines() if line.startswith("# ")))
    config = yaml.safe_load(text)
    for key in ("available_node_types", "head_node_type", "max_workers"):
        config.pop(key)
    config.update(local)
    out = prepared(config)
    assert out["provider"]["type"] == "local"
    assert out["provider"]["worker_ips"] == local["provider"]["worker_ips"]


def test_validation_rejects_a_broken_config():
    config = yaml.safe_load(CLUSTER.read_text())
    config["available_node_types"]["gpu_worker"]["max_wokers"] = 2  # a typo Ray must catch
    with pytest.raises(Exception, match="max_wokers"):
        prepared(config)


def test_every_key_is_commented():
    """Each key line of the active config has a comment on it or on the line above."""
    lines = CLUSTER.read_text().splitlines()
    key = re.compile(r"^\s*(- )?[\"~\w./-]+\"?:")
    bare = [n + 1 for n, line in enumerate(lines)
            if key.match(line) and "#" not in line and not (n and lines[n - 1].lstrip().startswith("#"))]
    assert bare == [], f"cluster.yaml lines without a comment: {bare}"


def header_commands(prefix: str) -> list[list[str]]:
    """The commands in cluster.yaml's header comment that start with `prefix`, continuation lines joined."""
    import shlex

    lines = [line[2:].strip() for line in CLUSTER.read_text().splitlines() if line.startswith("#   ")]
    commands, current = [], None
    for line in lines:
        if current is not None:
            current += " " + line.rstrip("\\").strip()
        elif line.startswith(prefix):
            current = line.rstrip("\\").strip()
        if current is not None and not line.endswith("\\"):
            commands.append(shlex.split(current))
            current = None
    return commands


def test_the_header_has_one_job_line_per_stage_that_ray_and_lookahead_ray_both_parse():
    import json

    from ray.dashboard.modules.job.cli import submit

    from lookahead_ray.cli import build_parser

    jobs = header_commands("ray job submit")
    stages = []
    for command in jobs:
        params = submit.make_context("submit", command[3:]).params  # Ray's own `ray job submit` options
        assert params["working_dir"] == "."
        env = json.loads(params["runtime_env_json"])["env_vars"]
        assert env["MLFLOW_TRACKING_URI"] == "http://HEAD_IP:5000"
        entry = list(params["entrypoint"])
        assert entry[:3] == ["python", "-m", "lookahead_ray"]
        args = build_parser().parse_args(entry[3:])  # every flag exists in the CLI
        assert args.address == "auto"  # the driver joins the cluster it was submitted to
        stages.append(entry[3] if entry[3] != "bench" else f"bench {entry[4]}")
    assert stages == ["generate", "grade", "train", "tune", "bench replay"]


def test_the_head_starts_an_mlflow_server_with_artifacts_on_the_bucket():
    import shlex

    from mlflow.cli import server

    config = yaml.safe_load(CLUSTER.read_text())
    starts = [c for c in config["head_start_ray_commands"] if "mlflow server" in c]
    assert len(starts) == 1
    argv = shlex.split(starts[0].split(">", 1)[0])  # up to the log redirection
    params = server.make_context("server", argv[argv.index("server") + 1:]).params  # MLflow's own CLI options
    assert params["host"] == "0.0.0.0" and params["port"] == 5000
    assert params["backend_store_uri"] == "sqlite:///$HOME/mlflow/mlflow.db"  # the head's disk (the shell expands $HOME)
    assert params["artifacts_destination"].startswith("s3://") and params["serve_artifacts"]
    assert any("boto3" in c for c in config["head_setup_commands"])  # MLflow's S3 artifact store needs it
    assert "Postgres" in CLUSTER.read_text()  # when to move off sqlite is said beside the command
