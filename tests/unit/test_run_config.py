"""A rerun with the same name and storage must be the same recipe: Ray Train would resume the old run."""

import dataclasses
import json

import pytest

from lookahead_ray.config import CurriculumConfig, TrainConfig
from lookahead_ray.storage import read_text, write_text
from lookahead_ray.training.trainer import RUN_CONFIG, check_same_config


def config(tmp_path, **fields) -> TrainConfig:
    return TrainConfig(storage_path=str(tmp_path / "runs"), name="r", **fields)


def test_the_first_start_records_the_config_beside_the_run(tmp_path):
    check_same_config(config(tmp_path, lr=1e-4))
    recorded = json.loads((tmp_path / "runs" / "r" / RUN_CONFIG).read_text())
    assert recorded["lr"] == 1e-4 and recorded["curriculum.r0"] == CurriculumConfig().r0
    assert "register_as" not in recorded and "storage_path" not in recorded  # bookkeeping, not the recipe


def test_the_same_recipe_may_restart_with_other_bookkeeping(tmp_path):
    check_same_config(config(tmp_path, lr=1e-4))
    check_same_config(config(tmp_path, lr=1e-4, register_as=None, experiment="other", max_failures=5))


@pytest.mark.parametrize("change,field", [({"lr": 2e-4}, r"lr: 0.0001 -> 0.0002"),
                                          ({"curriculum": CurriculumConfig(r0=0.5)}, r"curriculum.r0: 0.3 -> 0.5"),
                                          ({"router": "mlc"}, r"router: 'lookahead-mlm' -> 'mlc'")])
def test_another_recipe_under_the_same_name_is_refused_naming_folder_and_field(tmp_path, change, field):
    first = config(tmp_path, lr=1e-4)
    check_same_config(first)
    with pytest.raises(ValueError, match=rf"runs/r holds a run started with another config \({field}"):
        check_same_config(dataclasses.replace(first, **change))
    check_same_config(dataclasses.replace(first, name="r2", **change))  # another name is another run


def test_small_files_round_trip_at_a_location(tmp_path):
    assert read_text(tmp_path / "a" / "b.txt", "storage_path") is None
    write_text(tmp_path / "a" / "b.txt", "x\n", "storage_path")
    assert read_text(tmp_path / "a" / "b.txt", "storage_path") == "x\n"
