"""Two Ray nodes on this machine, loopback only: a Ray Data grading job and a 2-worker training
each lose the second node half-way. The job must still return every row exactly once; the
training must resume from its last checkpoint on a replacement node (as the autoscaler would add).

The nodes are `ray start --block` processes, each in its own session and all in one private temp
dir, so that killing a node (SIGKILL to its process tree) and the final clean-up touch only what
this test started; `ray stop` would stop every Ray on the machine. The drivers run as
subprocesses (`python test_multinode.py data|train ...`) so that this pytest process stays free
of a second Ray connection.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # in `make test`: issue #6 wants the node-failure test in CI

ROWS = 240
BATCH = 8
MAX_STEPS = 8
HEAD = {"num_cpus": 1, "resources": {"grader": 1}}
SIDE = {"num_cpus": 1, "resources": {"grader": 1}}
# Faster detection of a dead node (the default takes tens of seconds).
SYSTEM_CONFIG = {"health_check_initial_delay_ms": 1000, "health_check_period_ms": 1000,
                 "health_check_failure_threshold": 3}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalCluster:
    """A Ray head and extra nodes on 127.0.0.1, started with `ray start --block` in `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.temp_dir = root / "ray"
        self.nodes: dict[str, subprocess.Popen] = {}
        self.address = f"127.0.0.1:{free_port()}"

    def env(self, name: str) -> dict[str, str]:
        # LR_NODE_NAME reaches every worker of the node: the tasks report where they ran.
        return {**os.environ, "RAY_AUTH_MODE": "disabled", "LR_NODE_NAME": name, "RAY_DEDUP_LOGS": "0"}

    def start(self, name: str, spec: dict, head: bool = False, attempts: int = 3) -> None:
        """Start a node and wait for "Ray runtime started"; retry when it dies on the way up (on a loaded
        machine the raylet can give up waiting for its agents)."""
        for attempt in range(1, attempts + 1):
            log = self.root / f"node-{name}.log"
            with open(log, "w") as out:
                process = subprocess.Popen(self.command(spec, head), env=self.env(name), stdout=out,
                                           stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.time() + 120
            while process.poll() is None and time.time() < deadline:
                if "Ray runtime started" in log.read_text():
                    self.nodes[name] = process
                    return
                time.sleep(0.5)
            self.terminate(process)
            tail = log.read_text()[-2000:]
        raise RuntimeError(f"node {name} did not start in {attempts} attempts; the last said:\n{tail}")

    def command(self, spec: dict, head: bool) -> list[str]:
        ports = {flag: free_port() for flag in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                                                "--metrics-export-port", "--runtime-env-agent-port")}
        command = [str(Path(sys.executable).parent / "ray"), "start", "--block", "--node-ip-address=127.0.0.1",
                   f"--temp-dir={self.temp_dir}", f"--num-cpus={spec['num_cpus']}", "--num-gpus=0",
                   f"--resources={json.dumps(spec['resources'])}", "--disable-usage-stats",
                   *(f"{flag}={port}" for flag, port in ports.items())]
        if head:
            return command + ["--head", f"--port={self.address.split(':')[1]}", "--include-dashboard=false",
                              f"--ray-client-server-port={free_port()}", f"--system-config={json.dumps(SYSTEM_CONFIG)}"]
        return command + [f"--address={self.address}"]

    def kill(self, name: str) -> None:
        """Lose a node: SIGKILL its `ray start` process, raylet, agents and workers at once."""
        self.terminate(self.nodes[name], signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM each node (the head last), then SIGKILL whatever of ours is left."""
        import psutil

        for name in sorted(self.nodes, key=lambda n: n == "head"):
            self.terminate(self.nodes[name])
        marker = str(self.temp_dir)  # a fresh mkdtemp path: only this test's processes carry it
        for process in psutil.process_iter(["pid", "cmdline"]):
            if process.pid != os.getpid() and marker in " ".join(process.info["cmdline"] or []):
                process.kill()

    @staticmethod
    def terminate(node: subprocess.Popen, how: signal.Signals = signal.SIGTERM) -> None:
        """Signal a node's process tree (found by pid), wait, and SIGKILL what is left after 10 s."""
        import psutil

        try:
            parent = psutil.Process(node.pid)
            processes = [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for process in processes if how == signal.SIGKILL else [parent]:
            try:
                process.send_signal(how)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(processes, timeout=10)
        for process in alive:
            process.kill()
        node.wait(timeout=10)


def run_driver(cluster: LocalCluster, *args: str) -> subprocess.Popen:
    log = open(cluster.root / f"driver-{args[0]}.log", "w")
    return subprocess.Popen([sys.executable, __file__, *args], env=cluster.env("driver"), stdout=log,
                            stderr=subprocess.STDOUT, cwd=cluster.root)


def wait_until(condition, what: str, driver: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        if driver.poll() is not None:
            raise AssertionError(f"the driver ended before {what} (exit {driver.returncode})")
        if time.time() > deadline:
            raise TimeoutError(f"no {what} within {timeout}s")
        time.sleep(0.2)


def finish(driver: subprocess.Popen, cluster: LocalCluster, name: str, timeout: float = 180.0) -> dict:
    driver.wait(timeout=timeout)
    log = (cluster.root / f"driver-{name}.log").read_text()
    assert driver.returncode == 0, log[-4000:]
    return {**json.loads((cluster.root / f"{name}.json").read_text()), "log": log}


@pytest.fixture
def cluster():
    root = Path(tempfile.mkdtemp(prefix="lr-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    local = LocalCluster(root)
    try:
        local.start("head", HEAD, head=True)
        local.start("side", SIDE)
        yield local
    finally:
        local.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def tiny_routing_data(tmp_path_factory, release_frame):
    """32 train and 8 val GSM8K queries of the release, and a 2-layer BERT to route with."""
    from tests.tiny_models import gsm8k_routing_data

    data, backbone = gsm8k_routing_data(tmp_path_factory.mktemp("multinode"), release_frame, 32, 8)
    return {"data": str(data), "backbone": str(backbone)}


def test_data_job_and_training_survive_losing_a_node(cluster, tiny_routing_data):
    progress = cluster.root / "progress"
    progress.mkdir()

    # Ray Data: grade ROWS answers on both nodes; lose the side node after it graded 2 batches.
    driver = run_driver(cluster, "data", cluster.address, str(progress))
    wait_until(lambda: len(list(progress.glob("side-*"))) >= 2, "batches graded on the side node", driver)
    cluster.kill("side")
    result = finish(driver, cluster, "data")
    ids = sorted(result["ids"])
    assert ids == list(range(ROWS)), "a row was lost or returned twice"
    assert result["correct"] == sum(expected_score(i) for i in range(ROWS))
    assert {p.name.split("-")[0] for p in progress.iterdir()} == {"head", "side"}  # work landed on both
    assert set(result["nodes"]) <= {"head", "side"}

    # Ray Train: 2 workers (1 CPU each: one per node); lose the side node after the first checkpoint,
    # a replacement node joins, and the run resumes from the last checkpoint.
    cluster.start("side2", SIDE)
    storage = cluster.root / "train"
    driver = run_driver(cluster, "train", cluster.address, str(storage), json.dumps(tiny_routing_data))
    wait_until(lambda: committed_checkpoints(storage) > 0, "committed checkpoint", driver, timeout=240)
    cluster.kill("side2")
    cluster.start("side3", SIDE)
    result = finish(driver, cluster, "train", timeout=300)
    assert result["step"] == MAX_STEPS
    resumed = [line for line in result["log"].splitlines() if "resumed from step" in line]
    assert resumed, "training did not resume from a checkpoint"
    assert all(0 < int(line.rsplit("step", 1)[1]) < MAX_STEPS for line in resumed), resumed
    assert result["world_size"] == 2


def committed_checkpoints(storage: Path) -> int:
    """Checkpoints Ray Train has registered (a checkpoint_* folder alone may still be uploading)."""
    for snapshot in storage.glob("*/checkpoint_manager_snapshot.json"):
        try:
            return len(json.loads(snapshot.read_text())["checkpoint_results"])
        except (ValueError, KeyError):
            return 0  # caught mid-write
    return 0


def expected_score(row_id: int) -> float:
    return 0.0 if row_id % 5 == 0 else 1.0  # every fifth answer is wrong


# ---- drivers, run as `python test_multinode.py data|train ADDRESS ...` by the test above ----

class GradeRows:
    """A grading stage that also records where it ran (and leaves a progress file per batch)."""

    def __init__(self, progress: str) -> None:
        self.progress = Path(progress)
        self.node = os.environ.get("LR_NODE_NAME", "unknown")

    def __call__(self, batch):
        from lookahead_ray.data.grade import grade_math

        time.sleep(0.3)  # long enough for the test to kill a node half-way
        batch["score"] = [grade_math(r, ref) for r, ref in zip(batch["response"], batch["reference"])]
        batch["node"] = self.node
        (self.progress / f"{self.node}-{int(batch['id'].iloc[0])}-{time.time_ns()}").touch()
        return batch


def data_driver(address: str, progress: str) -> dict:
    import ray

    ray.init(address=address)
    ray.data.DataContext.get_current().enable_progress_bars = False
    rows = [{"id": i, "response": f"... so the answer is \\boxed{{{i % 7}}}",
             "reference": str(i % 7 + (1 if i % 5 == 0 else 0))} for i in range(ROWS)]
    ds = ray.data.from_items(rows, override_num_blocks=ROWS // BATCH)
    ds = ds.map_batches(GradeRows, fn_constructor_kwargs={"progress": progress}, batch_size=BATCH,
                        batch_format="pandas", concurrency=2, num_cpus=0, resources={"grader": 0.5},
                        scheduling_strategy="SPREAD")
    out = ds.take_all()
    return {"ids": [int(r["id"]) for r in out], "correct": sum(r["score"] for r in out),
            "nodes": sorted({r["node"] for r in out})}


def train_driver(address: str, storage: str, data: str) -> dict:
    import ray

    from lookahead_ray.config import TrainConfig
    from lookahead_ray.training.trainer import build_trainer

    ray.init(address=address)
    ray.data.DataContext.get_current().enable_progress_bars = False
    paths = json.loads(data)
    cfg = TrainConfig(router="lookahead-mlm", dataset=paths["data"], backbone=paths["backbone"], max_prompt_len=32,
                      block_len=8, batch_size=2, max_steps=MAX_STEPS, eval_every=1, num_workers=2,
                      cpus_per_worker=1.0, max_failures=3, storage_path=storage, name="two-nodes",
                      register_as=None, drop_tied=False, mix="natural")  # every row: MAX_STEPS decides
    result = build_trainer(cfg).fit()
    return {"step": int(result.metrics["step"]), "world_size": cfg.num_workers, "checkpoint": result.checkpoint.path}


if __name__ == "__main__":
    kind, *arguments = sys.argv[1:]
    outcome = {"data": data_driver, "train": train_driver}[kind](*arguments)
    Path(f"{kind}.json").write_text(json.dumps(outcome))
