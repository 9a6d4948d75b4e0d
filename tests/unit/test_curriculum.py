import math

import pytest

from lookahead_ray.curriculum import mask_rate


@pytest.mark.parametrize(
    ("step", "total", "r0", "warmup", "expected"),
    [
        (0, 100, 0.3, 0.2, 0.3),
        (10, 100, 0.3, 0.2, 0.65),  # 0.3 + 0.7 * 10/20
        (20, 100, 0.3, 0.2, 1.0),
        (90, 100, 0.3, 0.2, 1.0),
        (2, 10, 0.5, 0.5, 0.7),  # 0.5 + 0.5 * 2/5
        (1000, 10, 0.0, 1.0, 1.0),  # past the end of training
    ],
)
def test_linear_hand_values(step, total, r0, warmup, expected):
    assert mask_rate(step, total, r0=r0, warmup_ratio=warmup) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 0.2),
        (1, 0.2 + 0.8 * (1 - math.sqrt(0.5)) / 2),  # progress 1/4: (1 - cos(pi/4)) / 2 = 0.1464...
        (2, 0.6),  # halfway: 0.2 + 0.8 * 0.5
        (3, 0.2 + 0.8 * (1 + math.sqrt(0.5)) / 2),
        (4, 1.0),
        (7, 1.0),
    ],
)
def test_cosine_hand_values(step, expected):
    # warmup = 0.5 * 8 = 4 steps
    assert mask_rate(step, 8, r0=0.2, warmup_ratio=0.5, shape="cosine") == pytest.approx(expected, abs=1e-12)


def test_cosine_starts_slower_than_linear():
    assert mask_rate(1, 8, r0=0.2, warmup_ratio=0.5, shape="cosine") < mask_rate(1, 8, r0=0.2, warmup_ratio=0.5)


def test_step_shape_jumps_once_at_the_end_of_warmup():
    rates = [mask_rate(s, 10, r0=0.3, warmup_ratio=0.4, shape="step") for s in range(7)]
    assert rates == [0.3, 0.3, 0.3, 0.3, 1.0, 1.0, 1.0]


def test_float_noise_does_not_delay_the_end_of_warmup():
    # 0.7 * 10 == 7.000000000000001 in floating point; step 7 must already be the end.
    assert mask_rate(7, 10, r0=0.0, warmup_ratio=0.7, shape="step") == 1.0
    assert mask_rate(7, 10, r0=0.0, warmup_ratio=0.7) == 1.0


@pytest.mark.parametrize("shape", ["linear", "cosine", "step"])
def test_rates_rise_monotonically_from_r0_to_one(shape):
    rates = [mask_rate(s, 50, r0=0.25, warmup_ratio=0.3, shape=shape) for s in range(51)]
    assert rates[0] == 0.25 and rates[-1] == 1.0
    assert all(a <= b for a, b in zip(rates, rates[1:]))


def test_r0_of_one_is_always_one():
    assert {mask_rate(s, 10, r0=1.0) for s in range(10)} == {1.0}


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"shape": "exp"}, "shape"),
        ({"r0": -0.1}, "r0"),
        ({"r0": 1.5}, "r0"),
        ({"warmup_ratio": 0.0}, "warmup_ratio"),
        ({"warmup_ratio": -1.0}, "warmup_ratio"),
        ({"total_steps": 0}, "total_steps"),
        ({"step": -1}, "step"),
    ],
)
def test_bad_arguments_are_named(kwargs, name):
    arguments = {"step": 0, "total_steps": 10} | kwargs
    with pytest.raises(ValueError, match=rf"^{name} "):
        mask_rate(**arguments)
