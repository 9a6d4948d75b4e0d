"""benchmarks/power.py: standard errors, power and the test size a margin needs, on hand-made replays."""

import json
import math

import numpy as np
import pytest

from tests.scripts import load_benchmark


@pytest.fixture(scope="module")
def power():
    return load_benchmark("power")


def entry(picked: list[float]) -> dict:
    return {"n": len(picked), "oracle": 100.0, "random": 0.0, "picked": picked, "pick_share": {"x": 1.0}}


def result(picked: list[float]) -> dict:
    return {"benchmarks": {"GSM8K": entry(picked)}, "average": {}}


def test_query_error_is_the_seed_averaged_per_query_spread(power):
    d = {"A": np.array([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0]])}
    assert power.query_error(d) == pytest.approx(np.std([1, 0, 1, 0], ddof=1) / 2)
    two = {"A": d["A"], "B": d["A"]}  # two equal sets: the average's error shrinks by sqrt(2)
    assert power.query_error(two) == pytest.approx(power.query_error(d) / math.sqrt(2))


def test_power_is_the_false_positive_rate_at_zero_and_80_percent_at_2_8_standard_errors(power):
    assert power.power(0.0, 0.01) == pytest.approx(0.025, abs=1e-3)
    assert power.power(0.01 * (power.Z_95 + power.Z_80), 0.01) == pytest.approx(0.80, abs=1e-3)


def test_the_test_size_grows_with_the_square_and_the_seed_part_can_make_it_unreachable(power):
    needed = 0.02 / (power.Z_95 + power.Z_80)
    no_seed_part = power.seed_variance(needed * 2, needed * 2)
    assert no_seed_part == 0.0
    assert power.queries_factor(0.02, needed * 2, no_seed_part) == pytest.approx(4.0)
    seed_var = power.seed_variance(needed * 2, needed)  # 3 needed**2: 1.7x the whole budget's SE
    assert seed_var == pytest.approx(3 * needed ** 2)
    assert math.isinf(power.queries_factor(0.02, needed, seed_var))
    assert math.isfinite(power.queries_factor(0.02, needed, seed_var, seed_ratio=10.0))


def test_the_table_reads_a_replay_and_bad_input_is_named(power, tmp_path, capsys):
    rng = np.random.default_rng(0)
    best = rng.integers(0, 2, 200).astype(float).tolist()
    replay = {"trained": {"lookahead-mlm": [result(best), result([1.0] * 200)], "mlc": [result(best)] * 2},
              "baselines": {"best-single": result(best)}}
    path = tmp_path / "replay.json"
    path.write_text(json.dumps(replay))
    assert power.main(["--replay", str(path), "--effect", "0.05"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"best-single", "mlc"} and "| 200 |" in rows["best-single"]
    assert out.rstrip().endswith("--effect 0.05")
    with pytest.raises(SystemExit, match="no results for router 'lookahead-clm'"):
        power.main(["--replay", str(path), "--router", "lookahead-clm"])
    with pytest.raises(SystemExit, match="--effect must be > 0"):
        power.main(["--replay", str(path), "--effect", "0"])
