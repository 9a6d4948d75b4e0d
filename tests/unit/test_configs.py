"""Every YAML config in the repo loads as the dataclass it serialises."""

from pathlib import Path

import pytest

from lookahead_ray.candidates import PAPER_CANDIDATES
from lookahead_ray.config import DataConfig, TrainConfig, load_data_config, load_pool, load_train_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted(REPO.glob("configs/train-*.yaml")) + sorted(REPO.glob("configs/replay-*.yaml")),
                         ids=lambda p: p.name)
def test_train_configs_load(path):
    cfg = load_train_config(path)
    assert isinstance(cfg, TrainConfig)
    if path.name == "train-demo-cpu.yaml":  # trains for the default CPU pool, in the pool's order
        assert cfg.data.candidates == load_pool(REPO / "configs" / "pool-cpu.yaml").names
    else:
        assert cfg.data.candidates == PAPER_CANDIDATES


def test_replay_config_is_the_default():
    assert load_data_config(REPO / "configs" / "replay.yaml") == DataConfig()
    assert DataConfig().candidates == PAPER_CANDIDATES


def test_duplicate_candidates_are_rejected():
    with pytest.raises(ValueError, match="duplicate"):
        DataConfig(candidates=("a", "a"))


def test_train_config_overrides_and_errors(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("router: mlc\ncurriculum: {r0: 0.5}\n")
    cfg = load_train_config(path, max_steps=3, router=None)
    assert (cfg.router, cfg.max_steps, cfg.curriculum.r0) == ("mlc", 3, 0.5)
    path.write_text("router: mlc\ncurriculum: {shape: zigzag}\n")
    with pytest.raises(ValueError, match="curriculum.shape"):
        load_train_config(path)
    path.write_text("routr: mlc\n")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['routr'\]"):
        load_train_config(path)
    assert TrainConfig(router="lookahead-clm").response_loss_weight == 0.5
    assert TrainConfig(router="lookahead-mlm").response_loss_weight == 0.2


def test_aux_ramp_raises_the_response_loss_weight_linearly():
    cfg = TrainConfig(router="lookahead-clm", aux_ramp_ratio=0.4)  # 0.5 (causal) reached at step 40 of 100
    weights = [cfg.aux_weight_at(step, 100) for step in (0, 10, 20, 40, 41, 99)]
    assert weights == pytest.approx([0.0, 0.125, 0.25, 0.5, 0.5, 0.5])
    assert TrainConfig(router="lookahead-mlm", aux_weight=0.3).aux_weight_at(0, 100) == 0.3  # no ramp: full at once
    assert TrainConfig(router="lookahead-clm", aux_ramp_ratio=1.0).aux_weight_at(0, 1) == 0.0
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="aux_ramp_ratio must be in"):
            TrainConfig(aux_ramp_ratio=bad)


def test_id_token_noise_reaches_the_router_spec_and_old_specs_keep_the_former_default(tmp_path):
    import json

    from lookahead_ray.routers.checkpoint import RouterSpec, read_spec

    spec = RouterSpec.from_train_config(TrainConfig(router="lookahead-clm", id_token_noise=1.0))
    assert spec.id_token_noise == 1.0
    (tmp_path / "router.json").write_text(json.dumps({"kind": "lookahead-clm", "backbone": "smollm2",
                                                      "candidates": ["a", "b"]}))  # written before the field
    assert read_spec(tmp_path).id_token_noise == 0.1
    with pytest.raises(ValueError, match="id_token_noise must be >= 0"):
        TrainConfig(id_token_noise=-1.0)


def test_routing_head_reaches_the_router_spec_and_old_specs_keep_the_shared_head(tmp_path):
    import json

    from lookahead_ray.routers.checkpoint import RouterSpec, read_spec

    spec = RouterSpec.from_train_config(TrainConfig(router="lookahead-clm", routing_head="per_candidate"))
    assert spec.routing_head == "per_candidate"
    (tmp_path / "router.json").write_text(json.dumps({"kind": "lookahead-clm", "backbone": "smollm2",
                                                      "candidates": ["a", "b"]}))  # written before the field
    assert read_spec(tmp_path).routing_head == "shared"
    with pytest.raises(ValueError, match="routing_head must be one of"):
        TrainConfig(routing_head="per_model")


def test_train_config_takes_the_candidates_of_a_generated_dataset(tmp_path):
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "manifest.json").write_text('{"candidates": ["smollm2-math", "smollm2-code", "smollm2-chat"]}')
    config = tmp_path / "t.yaml"
    config.write_text("router: mlc\n")
    assert load_train_config(config, dataset=str(dataset)).data.candidates == ("smollm2-math", "smollm2-code",
                                                                                "smollm2-chat")
    config.write_text("router: mlc\ndata: {candidates: [smollm2-code, smollm2-math, smollm2-chat]}\n")
    assert load_train_config(config, dataset=str(dataset)).data.candidates[0] == "smollm2-code"  # the config wins
    assert load_train_config(config, dataset=str(tmp_path)).data.candidates[0] == "smollm2-code"
    config.write_text("router: mlc\n")
    assert load_train_config(config, dataset=str(tmp_path)).data.candidates == PAPER_CANDIDATES  # not a dataset
    (dataset / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="manifest.json"):
        load_train_config(config, dataset=str(dataset))
