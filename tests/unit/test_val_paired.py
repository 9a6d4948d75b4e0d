"""benchmarks/val_paired.py: reading each recipe's checkpoints, and the paired table, on hand-made results."""

import json

import pytest

from tests.scripts import load_benchmark


@pytest.fixture(scope="module")
def paired():
    return load_benchmark("val_paired")


def test_checkpoints_come_from_a_replay_json_or_a_list(paired, tmp_path):
    replay = tmp_path / "replay.json"
    replay.write_text(json.dumps({"best_checkpoints": {"lookahead-mlm": ["s0", "s1"]}}))
    assert paired.checkpoints(str(replay), "lookahead-mlm") == ["s0", "s1"]
    assert paired.checkpoints("x/c0,x/c1,", "mlc") == ["x/c0", "x/c1"]
    with pytest.raises(SystemExit, match=f"{replay}: no best_checkpoints for router 'mlc'"):
        paired.checkpoints(str(replay), "mlc")


def result(picked: list[float]) -> dict:
    entry = {"n": len(picked), "oracle": 100.0, "random": 50.0, "picked": picked,
             "normalized": (100.0 * sum(picked) / len(picked) - 50.0) / 50.0}
    return {"benchmarks": {"GSM8K": entry}, "average": {"normalized": entry["normalized"]}}


def test_the_table_gives_each_seed_and_the_paired_interval(paired):
    from lookahead_ray.evaluation.stats import bootstrap_interval, paired_differences

    a = [result([0.0, 1.0] * 20), result([1.0, 0.0] * 20)]
    b = [result([1.0] * 40), result([1.0] * 40)]
    same = paired.table(a, a, bootstrap_interval(paired_differences(a, a)))
    assert "| a | 0 | 0.000 | 0.000 |" in same and "+0.000 [+0.000, +0.000] |" in same.splitlines()[-1]
    better = paired.table(a, b, bootstrap_interval(paired_differences(b, a)))
    assert "| b | 1 | 1.000 | 1.000 |" in better and "GSM8K (40)" in better
    assert better.splitlines()[-1].count("+1.000 [") == 2 and better.rstrip().endswith("* |")
