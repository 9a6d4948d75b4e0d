"""Several Ray clusters on one machine: a sweep must not hang.

When ASHA stops a trial, Train V2's PlacementGroupCleaner (a detached actor) sees the trial's Train
controller die and removes its placement group. It finds the controller through the state API,
resolving the cluster address on its own; with another Ray cluster up on the machine that lookup
fails ("Found multiple active Ray instances"), the monitor thread dies, the placement group and its
CPUs stay reserved and the sweep waits for CPUs forever. `tuning.start_ray` tells every worker its
cluster's address.

The test starts a second cluster first, then drives Ray's own PlacementGroupCleaner the way Train
does (a controller actor, its placement group, the controller killed) in a driver that joined Ray
with `start_ray` and, as the control, with a plain `ray.init()`: only the first frees the group.
The drivers are subprocesses so that this pytest process holds no Ray connection.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

# 9 min on this 2-core machine under load (3 Ray starts; the control waits out its 30 s): `make test-all`
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def other_cluster():
    """A second Ray cluster (1 CPU, no dashboard) started before the test's own."""
    from tests.integration.test_multinode import LocalCluster  # here: the driver below runs without tests/

    root = Path(tempfile.mkdtemp(prefix="lr2-", dir="/tmp"))
    cluster = LocalCluster(root)
    try:
        cluster.start("head", {"num_cpus": 1, "resources": {}}, head=True, attempts=5)  # a loaded machine
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("how,freed", [("start_ray", True), ("plain", False)])
def test_a_dead_controllers_placement_group_is_freed_with_another_cluster_up(other_cluster, tmp_path, how, freed):
    done = subprocess.run([sys.executable, __file__, how], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**clean_env(), "RAY_AUTH_MODE": "disabled"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["removed"] is freed, result


def clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}


# ---- the driver, run as `python test_two_clusters.py start_ray|plain` ----

def driver(how: str) -> dict:
    import ray
    from ray.train.v2._internal.execution.controller.placement_group_cleaner import PlacementGroupCleaner
    from ray.util.placement_group import placement_group, placement_group_table

    from lookahead_ray.tuning import start_ray

    if how == "start_ray":
        start_ray(None)
    else:
        ray.init(include_dashboard=True, dashboard_host="127.0.0.1")

    @ray.remote(num_cpus=0)
    class Controller:  # stands for a Train controller: the cleaner watches its actor id
        def actor_id(self) -> str:
            return ray.get_runtime_context().get_actor_id()

    controller = Controller.remote()
    group = placement_group([{"CPU": 1}])
    ray.get(group.ready(), timeout=60)
    cleaner = ray.remote(num_cpus=0)(PlacementGroupCleaner).options(lifetime="detached").remote(
        controller_actor_id=ray.get(controller.actor_id.remote()), check_interval_s=0.5, get_actor_timeout_s=5,
        stop_timeout=5)
    ray.get(cleaner.register_placement_group.remote(group))
    ray.get(cleaner.start_monitoring.remote())
    ray.kill(controller)  # what ASHA's stop does to a trial's controller
    deadline, removed = time.time() + 30, False  # the cleaner polls every 0.5 s: seconds when it works
    while time.time() < deadline and not removed:
        removed = placement_group_table(group).get("state") == "REMOVED"
        time.sleep(1)
    ray.shutdown()
    return {"removed": removed}


if __name__ == "__main__":
    print(json.dumps(driver(sys.argv[1])))
