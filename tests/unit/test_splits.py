import pytest

from lookahead_ray.config import SplitConfig
from lookahead_ray.data.splits import assign_split, hash_unit


def test_split_is_deterministic_and_salted():
    ids = [str(i) for i in range(200)]
    first = [assign_split("MATH", i, SplitConfig()) for i in ids]
    assert first == [assign_split("MATH", i, SplitConfig()) for i in ids]
    assert first != [assign_split("MATH", i, SplitConfig(salt="other")) for i in ids]


def test_split_shares_follow_the_config():
    config = SplitConfig(train=0.5, val=0.1)
    splits = [assign_split("GSM8K", str(i), config) for i in range(20000)]
    assert splits.count("train") / len(splits) == pytest.approx(0.5, abs=0.015)
    assert splits.count("val") / len(splits) == pytest.approx(0.1, abs=0.01)
    assert splits.count("test") / len(splits) == pytest.approx(0.4, abs=0.015)


def test_hash_unit_depends_on_benchmark():
    assert hash_unit("GSM8K", "1", "s") != hash_unit("MATH", "1", "s")
    assert 0.0 <= hash_unit("GSM8K", "1", "s") < 1.0


@pytest.mark.parametrize("train,val", [(0.9, 0.1), (-0.1, 0.1), (0.5, -0.2)])
def test_bad_split_config_raises(train, val):
    with pytest.raises(ValueError, match="split"):
        SplitConfig(train=train, val=val)
