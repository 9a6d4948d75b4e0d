"""deployments/*.yaml are valid Serve configs whose `args` are AppArgs, whose pools load, and whose
`deployments:` entries name exactly deployments that the app builds."""

import importlib
from pathlib import Path

import pytest
import yaml

from lookahead_ray.config import load_pool
from lookahead_ray.serving.app import AppArgs, load_app_pool
from lookahead_ray.serving.engines import engine_groups
from lookahead_ray.serving.auth import check_exposure, is_loopback

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "deployments").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_serve_config(path, monkeypatch):
    from ray.serve.schema import ServeDeploySchema

    monkeypatch.chdir(REPO)
    raw = yaml.safe_load(path.read_text())
    config = ServeDeploySchema.model_validate(raw)
    (app,) = config.applications
    assert app.import_path == "deployments:app" and app.route_prefix == "/"
    module, _, name = app.import_path.partition(":")
    assert callable(getattr(importlib.import_module(module), name))
    args = AppArgs.model_validate(app.args)
    if not is_loopback(config.http_options.host):  # open to the network: never without a key
        assert not args.allow_unauthenticated and args.api_key is None  # the key comes from the nodes' env
        with pytest.raises(ValueError, match="LOOKAHEAD_API_KEY"):
            check_exposure(config.http_options.host, args.api_key, args.allow_unauthenticated)
    pool = load_app_pool(args.pool)
    engines = {name for name, _ in engine_groups(pool, "hf").items()}  # names do not depend on the engine here
    assert {d.name for d in app.deployments} <= {"LookaheadIngress", "LookaheadRouter"} | engines
    assert engines <= {d.name for d in app.deployments}  # every engine has its replicas/resources set here
    router = next(d for d in app.deployments if d.name == "LookaheadRouter")
    assert router.max_ongoing_requests >= args.router_max_batch_size


def test_the_cpu_config_serves_the_default_pool():
    raw = yaml.safe_load((REPO / "deployments" / "config.yaml").read_text())
    args = AppArgs.model_validate(raw["applications"][0]["args"])
    assert args.pool == AppArgs().pool == "configs/pool-cpu.yaml"
    if (REPO / args.pool).exists():
        assert len(load_pool(REPO / args.pool).candidates) >= 3


def test_the_gpu_config_serves_the_papers_candidates_in_order():
    from lookahead_ray.candidates import PAPER_CANDIDATES

    raw = yaml.safe_load((REPO / "deployments" / "gpu.yaml").read_text())
    pool = load_app_pool(AppArgs.model_validate(raw["applications"][0]["args"]).pool)
    assert pool.names == PAPER_CANDIDATES
    assert all(spec.engine == "vllm" and spec.num_gpus >= 1 for spec in pool.candidates)


def test_deployments_ships_with_the_package_so_cluster_nodes_import_it():
    import tomllib

    from setuptools import find_packages

    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = find_packages(where=str(REPO), include=include)
    assert "deployments" in packages and "lookahead_ray.serving" in packages
    assert "tests" not in packages and "benchmarks" not in packages
