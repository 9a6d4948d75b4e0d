"""Shared fixtures. Tests run Ray locally without token auth and never touch a model hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
RELEASE = SHARED_DATA / "lookahead-release"
SAMPLES = SHARED_DATA / "lookahead-release-format-samples"


@pytest.fixture(scope="session")
def release_path() -> Path:
    if not RELEASE.is_dir():
        pytest.skip(f"{RELEASE} not found: the shared release sits beside the repo")
    return RELEASE


@pytest.fixture(scope="session")
def samples_path() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip(f"{SAMPLES} not found")
    return SAMPLES


@pytest.fixture(scope="session")
def release_frame(release_path):
    from lookahead_ray.data.release import import_release

    return import_release(release_path)


@pytest.fixture(scope="session")
def samples_frame(samples_path):
    from lookahead_ray.data.release import import_release

    return import_release(samples_path)


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
