"""`lookahead-ray heldout`: the per-task table `make demo` ends with (evaluation/heldout.py)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from lookahead_ray.cli import main
from lookahead_ray.data.schema import write_dataset
from lookahead_ray.evaluation.heldout import heldout_report, heldout_rows
from lookahead_ray.routers.checkpoint import RouterSpec, build_router, save_router
from lookahead_ray.routers.predictor import RouterPredictor
from tests.tiny_models import save_tiny_bert

NAMES = ["math", "code", "chat"]


def frame_of(rows: list[tuple[str, str, list[float], str]]) -> pd.DataFrame:
    """A routing dataset from (benchmark, prompt, scores, split)."""
    return pd.DataFrame([
        {"prompt_id": str(i), "benchmark": b, "prompt": p, "candidates": NAMES, "responses": ["r"] * 3,
         "scores": s, "split": split, "aux": None}
        for i, (b, p, s, split) in enumerate(rows)
    ])


def test_a_router_that_picks_each_tasks_best_candidate_reaches_the_oracle():
    rows = frame_of([("arith", "1+1", [1, 0, 1], "test"), ("arith", "2+2", [1, 0, 0], "test"),
                     ("code", "def f", [0, 1, 0], "test"), ("code", "def g", [0, 0, 0], "test")])
    picks = np.array([0, 0, 1, 1])
    report = heldout_report(rows, picks, NAMES)
    assert report["tasks"]["arith"]["pick_share"] == {"math": 1.0, "code": 0.0, "chat": 0.0}
    assert report["tasks"]["code"]["pick_share"]["code"] == 1.0
    assert report["all"]["routed"] == report["all"]["oracle"] == 0.75
    # Alone, math answers 2 of 4 and code 1 of 4: routing beats every single candidate here.
    assert report["all"]["single"] == {"math": 0.5, "code": 0.25, "chat": 0.25}
    assert report["tasks"]["arith"]["single"]["chat"] == 0.5
    margin = report["vs_best_single"]  # routed 0.75 against math's 0.5, paired on the same 4 prompts
    assert margin["candidate"] == "math" and margin["mean"] == pytest.approx(0.25)
    assert margin["low"] <= 0.25 <= margin["high"] and 0.0 <= margin["low"]  # it never loses a prompt


def test_a_constant_router_scores_exactly_its_candidate():
    rows = frame_of([("arith", "1+1", [1, 0, 1], "test"), ("code", "def f", [0, 1, 0], "test"),
                     ("code", "def g", [0, 1, 1], "test")])
    report = heldout_report(rows, np.array([2, 2, 2]), NAMES)
    assert report["all"]["routed"] == report["all"]["single"]["chat"]
    assert report["all"]["pick_share"]["chat"] == 1.0
    margin = report["vs_best_single"]  # chat and code both answer 2 of 3; the first best is code
    assert margin["candidate"] == "code" and margin["mean"] == 0.0


def test_a_split_without_rows_is_named():
    with pytest.raises(ValueError, match="'val'.*splits present: \\['test'\\]"):
        heldout_rows(frame_of([("arith", "1+1", [1, 0, 0], "test")]), "val")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("heldout")
    torch.manual_seed(0)
    spec = RouterSpec(kind="mlc", backbone=str(save_tiny_bert(root / "bert")), candidates=tuple(NAMES),
                      max_prompt_len=32)
    return str(save_router(build_router(spec), spec, root / "router"))


def test_the_cli_prints_the_table_of_the_routers_own_picks(checkpoint, tmp_path, capsys):
    rows = frame_of([("arith", f"What is {i} plus {i}?", [1, 0, i % 2], "test") for i in range(6)]
                    + [("code", f"Write a function f{i}.", [0, 1, 0], "test") for i in range(4)]
                    + [("code", "Write g.", [0, 1, 0], "train")])
    write_dataset(rows, tmp_path / "ds", {"candidates": NAMES})
    out = tmp_path / "heldout.json"
    assert main(["heldout", "--checkpoint", checkpoint, "--data", str(tmp_path / "ds"), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "arith" in printed and "code" in printed and "routed" in printed and "95 % paired bootstrap" in printed
    report = json.loads(out.read_text())
    assert report["all"]["n"] == 10  # the train row is not held out
    test_rows = rows[rows["split"] == "test"].reset_index(drop=True)
    picks = RouterPredictor.load(checkpoint).score({"prompt": test_rows["prompt"].tolist()}).argmax(dim=1).numpy()
    assert report == json.loads(json.dumps(heldout_report(test_rows, picks, NAMES)))


def test_a_checkpoint_for_another_pool_is_an_error(checkpoint, tmp_path, capsys):
    rows = frame_of([("arith", "1+1", [1, 0, 0], "test")]).assign(candidates=[["a", "b", "c"]])
    write_dataset(rows, tmp_path / "ds", {"candidates": ["a", "b", "c"]})
    assert main(["heldout", "--checkpoint", checkpoint, "--data", str(tmp_path / "ds")]) == 2
    assert "trained for candidates ['math', 'code', 'chat']" in capsys.readouterr().err
