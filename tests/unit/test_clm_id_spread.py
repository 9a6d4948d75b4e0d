"""benchmarks/clm_id_spread.py on routers built in code: the spread report, and a non-causal checkpoint refused."""

import json

import pandas as pd
import pytest
import torch

from lookahead_ray.routers.checkpoint import RouterSpec, build_router, save_router
from tests.scripts import load_benchmark
from tests.tiny_models import save_tiny_bert, save_tiny_llama


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("clm_id_spread")


def saved(tmp_path, kind, backbone, noise=0.1):
    torch.manual_seed(0)
    spec = RouterSpec(kind=kind, backbone=str(backbone), candidates=("a", "b", "c"), max_prompt_len=16,
                      max_response_len=8, id_token_noise=noise)
    return str(save_router(build_router(spec), spec, tmp_path / f"{kind}-{noise}"))


def test_spread_reports_the_rows_distance_and_picks_per_benchmark(bench, tmp_path):
    llama = save_tiny_llama(tmp_path / "llama")
    val = pd.DataFrame({"prompt": ["what is 2 plus 2", "sum a list in python", "what is 3 times 4"],
                        "benchmark": ["GSM8K", "MBPP", "GSM8K"]})
    near, far = (bench.spread(saved(tmp_path, "lookahead-clm", llama, noise), val) for noise in (0.1, 1.0))
    distance = [float(lines[1].split("distance ")[1].split()[0]) for lines in (near, far)]
    assert distance[1] == pytest.approx(10 * distance[0], rel=0.01)  # the same seeded noise at ten times the scale
    picks = [line for line in far if line.startswith("  picks")]
    assert [p.split(" val")[0] for p in picks] == ["  picks on GSM8K", "  picks on MBPP"]
    assert sum(json.loads(picks[0].split(": ")[1])) == 2 and sum(json.loads(picks[1].split(": ")[1])) == 1


def test_spread_refuses_another_router_kind(bench, tmp_path):
    checkpoint = saved(tmp_path, "mlc", save_tiny_bert(tmp_path / "bert"))
    with pytest.raises(SystemExit, match="a mlc checkpoint; this reads causal routers only"):
        bench.spread(checkpoint, pd.DataFrame({"prompt": ["x"], "benchmark": ["GSM8K"]}))
