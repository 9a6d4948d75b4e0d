"""benchmarks/train_precision.py: the variant flag and the interleaved, progress-printing rounds (fake steps)."""

import pytest

from tests.scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("train_precision")


def test_variants_need_the_fp32_reference_and_known_names(bench):
    assert bench.parse_variants("fp32, compile") == ["fp32", "compile"]
    with pytest.raises(SystemExit, match="--variants.*unknown: \\['fp16'\\]"):
        bench.parse_variants("fp32,fp16")
    with pytest.raises(SystemExit, match="must list fp32"):
        bench.parse_variants("bf16")


def test_rounds_interleave_variants_skip_the_warm_up_and_report_progress(bench, capsys):
    calls = []

    def fake(name):
        def step(batch):
            calls.append((name, batch))
            return 0.5 if name == "fast" else 1.0, len(batch)
        return step

    plans = {"random": [[1], [1, 2], [1, 2, 3]], "buckets": [[1], [1], [1, 2]]}
    times, tokens = bench.time_rounds({"fp32": fake("fp32"), "fast": fake("fast")}, plans, steps=2)
    assert calls[:4] == [("fp32", [1]), ("fast", [1]), ("fp32", [1]), ("fast", [1])]  # round 0, both plans
    assert times[("fast", "random")] == [0.5, 0.5] and times[("fp32", "buckets")] == [1.0, 1.0]
    assert tokens == {"random": [2, 2, 3, 3], "buckets": [1, 1, 2, 2]}  # per counted step, each variant
    err = capsys.readouterr().err
    assert "[precision] warm-up round" in err and "[precision] round 2/2" in err
