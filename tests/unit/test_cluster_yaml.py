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
