"""benchmarks/aux_ablation.py: the arms' configs and the comparison table, on hand-made results."""

from pathlib import Path

import pytest

from lookahead_ray.config import load_train_config
from tests.scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ablation():
    return load_benchmark("aux_ablation")


def test_arms_differ_from_the_shipped_config_only_in_the_auxiliary_loss(ablation, tmp_path):
    folders = ablation.write_arm_configs(tmp_path, ROOT / "configs" / "replay-mlm-cpu.yaml")
    shipped = load_train_config(folders[ablation.SHIPPED] / "replay-mlm-cpu.yaml")
    assert shipped.head_warmup_steps > 0 and shipped.response_loss_weight == pytest.approx(0.2)
    arms = {arm: load_train_config(folder / "replay-mlm-cpu.yaml") for arm, folder in folders.items()}
    assert (arms["aux 0"].response_loss_weight, arms["aux 0"].head_warmup_steps) == (0.0, 0)
    assert (arms["aux 0.2"].response_loss_weight, arms["aux 0.2"].head_warmup_steps) == (0.2, 0)
    for arm, cfg in arms.items():  # the same budget: steps, rows, learning rate, curriculum
        for field in ("lr", "epochs", "batch_size", "max_train_samples", "mix", "num_layers", "block_len", "curriculum"):
            assert getattr(cfg, field) == getattr(shipped, field), (arm, field)


def test_an_arm_that_names_a_field_the_config_lacks_is_refused(ablation, monkeypatch):
    monkeypatch.setitem(ablation.ARMS, "typo", {"head_warmup_stepz": 0})
    with pytest.raises(ValueError, match="head_warmup_stepz"):
        ablation.arm_config({"lr": 1e-4, "head_warmup_steps": 30}, "typo")


def _result(picked: list[float]) -> dict:
    # picked: per-query 0/1; oracle and random in percent, as evaluate writes them
    entry = {"normalized": sum(picked) / len(picked), "picked": picked, "oracle": 100.0, "random": 0.0,
             "pick_share": {"a": 0.5, "b": 0.5}}
    return {"benchmarks": {"GSM8K": entry}}


def test_table_pairs_each_arm_with_the_shipped_one(ablation):
    results = {ablation.SHIPPED: [_result([1.0, 1.0, 0.0, 0.0])], "aux 0": [_result([0.0, 0.0, 0.0, 0.0])]}
    table = ablation.ablation_table(results, {ablation.SHIPPED: [0.5], "aux 0": [0.25]})
    shipped_row, aux0_row = table.splitlines()[2:]
    assert shipped_row.startswith(f"| {ablation.SHIPPED} | 0.500 |")
    assert "| -0.500 [" in aux0_row and aux0_row.endswith("| 0.250 |")  # the paired mean difference
