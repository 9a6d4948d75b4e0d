"""Every YAML config in the repo loads as the dataclass it serialises."""

from pathlib import Path

import pytest

from lookahead_ray.candidates import PAPER_CANDIDATES
from lookahead_ray.config import DataConfig, load_data_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted(REPO.glob("configs/*.yaml")), ids=lambda p: p.name)
def test_config_files_load(path):
    assert isinstance(load_data_config(path), DataConfig)


def test_replay_config_is_the_default():
    assert load_data_config(REPO / "configs" / "replay.yaml") == DataConfig()
    assert DataConfig().candidates == PAPER_CANDIDATES


def test_duplicate_candidates_are_rejected():
    with pytest.raises(ValueError, match="duplicate"):
        DataConfig(candidates=("a", "a"))
