"""Storage locations (lookahead_ray.storage): paths and URIs, and the errors that name the setting and
the fix. No Ray, no network: an S3 endpoint on a closed loopback port stands for a store that is down."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from lookahead_ray import storage
from lookahead_ray.storage import StorageError


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the block ends: nothing listens there


@pytest.mark.parametrize("location,uri", [("runs/train", False), ("/mnt/nfs/train", False),
                                          ("file:///mnt/x", False), ("s3://b/train", True), ("gs://b/x", True)])
def test_is_uri(location, uri):
    assert storage.is_uri(location) is uri


def test_local_paths_stay_as_today(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.ray_storage("runs/train") == {"storage_path": str(tmp_path / "runs" / "train")}
    assert storage.local_path("file:///mnt/x") == Path("/mnt/x")
    filesystem, path = storage.resolve("runs/x", "storage_path")
    assert filesystem.type_name == "local" and path == str(tmp_path / "runs" / "x")


def test_join_keeps_the_query_last():
    assert storage.join("s3://b/tune?endpoint_override=h:1&scheme=http", "sweep", "best.yaml") == \
        "s3://b/tune/sweep/best.yaml?endpoint_override=h:1&scheme=http"
    assert storage.join("runs/tune", "sweep") == str(Path("runs/tune/sweep"))


def test_an_s3_uri_gives_ray_its_filesystem_and_the_path_inside_it():
    kwargs = storage.ray_storage(f"s3://bucket/train?endpoint_override=127.0.0.1:{closed_port()}&scheme=http"
                                 "&region=us-east-1")
    assert kwargs["storage_path"] == "bucket/train"
    assert kwargs["storage_filesystem"].type_name == "s3"


def test_a_scheme_without_a_filesystem_names_the_setting():
    with pytest.raises(StorageError, match=r"storage_path=nosuch://b/x: no filesystem for nosuch://"):
        storage.resolve("nosuch://b/x", "storage_path")


def test_a_store_that_does_not_answer_fails_with_the_endpoint_to_check():
    uri = f"s3://bucket/train?endpoint_override=127.0.0.1:{closed_port()}&scheme=http&region=us-east-1"
    with pytest.raises(StorageError, match=r"storage_path=s3://bucket/train.*does not answer.*endpoint_override"):
        storage.check_reachable(uri, "storage_path")


def test_local_paths_need_no_store(tmp_path):
    storage.check_reachable(tmp_path / "nothing-yet", "storage_path")  # created on first write
    storage.check_shared(tmp_path / "nothing-yet", "storage_path")  # no Ray connected: one machine


def test_copy_tree_and_exists(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "a" / "sub" / "f.txt").write_text("x")
    storage.copy_tree(tmp_path / "a", tmp_path / "b", "--out")
    assert (tmp_path / "b" / "sub" / "f.txt").read_text() == "x"
    assert storage.exists(tmp_path / "b", "--out") and not storage.exists(tmp_path / "c", "--out")


def test_an_unreachable_tracking_server_fails_before_training(monkeypatch):
    from lookahead_ray.config import TrainConfig
    from lookahead_ray.training.trainer import train

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    cfg = TrainConfig(dataset="/nonexistent/dataset")  # never read: the check comes first
    with pytest.raises(ValueError, match=r"MLFLOW_TRACKING_URI=http://127.0.0.1:\d+: no MLflow server answers"):
        train(cfg)
