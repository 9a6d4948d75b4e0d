"""weight_ema: the exponential moving average of the weights that val scores and checkpoints use."""
import pytest
import torch

from lookahead_ray.config import TrainConfig
from lookahead_ray.routers.checkpoint import STATE_FILE, WEIGHTS_FILE
from lookahead_ray.training.loop import load_checkpoint_weights, weight_average


def set_weights(layer: torch.nn.Linear, value: float) -> None:
    with torch.no_grad():
        layer.weight.fill_(value)
        layer.bias.fill_(value)


def linear(value: float) -> torch.nn.Linear:
    layer = torch.nn.Linear(2, 1)
    set_weights(layer, value)
    return layer


def test_off_by_default():
    assert TrainConfig().weight_ema == 0.0
    assert weight_average(linear(1.0), TrainConfig()) is None


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_a_decay_outside_0_1_is_an_error_that_names_the_field(decay):
    with pytest.raises(ValueError, match=r"weight_ema must be in \[0, 1\)"):
        TrainConfig(weight_ema=decay)


def test_the_first_update_copies_then_each_update_moves_by_one_minus_decay():
    model = linear(0.0)
    average = weight_average(model, TrainConfig(weight_ema=0.75))
    set_weights(model, 4.0)
    average.update_parameters(model)  # the first update copies the raw weights
    assert torch.allclose(average.module.weight, torch.full((1, 2), 4.0))
    set_weights(model, 8.0)
    average.update_parameters(model)  # 0.75 * 4 + 0.25 * 8
    assert torch.allclose(average.module.weight, torch.full((1, 2), 5.0))
    assert torch.allclose(average.module.bias, torch.full((1,), 5.0))
    assert torch.allclose(model.weight, torch.full((1, 2), 8.0))  # the raw weights are untouched


def test_a_resume_restores_raw_and_averaged_weights_and_keeps_averaging(tmp_path):
    # what report() writes with weight_ema on: the average as the router, the raw weights in the train state
    torch.save(linear(5.0).state_dict(), tmp_path / WEIGHTS_FILE)
    torch.save({"raw_weights": linear(8.0).state_dict()}, tmp_path / STATE_FILE)

    model = linear(0.0)
    saved, averaged = load_checkpoint_weights(model, str(tmp_path))
    assert torch.allclose(model.weight, torch.full((1, 2), 8.0))  # training goes on from the raw weights
    average = weight_average(model, TrainConfig(weight_ema=0.75), averaged)
    assert torch.allclose(average.module.weight, torch.full((1, 2), 5.0))
    set_weights(model, 9.0)
    average.update_parameters(model)  # averages (0.75 * 5 + 0.25 * 9), not a fresh copy of the raw weights
    assert torch.allclose(average.module.weight, torch.full((1, 2), 6.0))


def test_a_checkpoint_without_an_average_loads_as_before(tmp_path):
    torch.save(linear(3.0).state_dict(), tmp_path / WEIGHTS_FILE)
    torch.save({"position": {"step": 2}}, tmp_path / STATE_FILE)
    model = linear(0.0)
    saved, averaged = load_checkpoint_weights(model, str(tmp_path))
    assert averaged is None and saved["position"]["step"] == 2
    assert torch.allclose(model.weight, torch.full((1, 2), 3.0))
