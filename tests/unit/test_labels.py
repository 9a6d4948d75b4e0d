import numpy as np
import pytest

from lookahead_ray.config import LabelConfig
from lookahead_ray.data.labels import bce_targets, normalize_scores


def test_min_max_normalisation_by_hand():
    scores = np.array([[1.0, 0.0, 0.5, 0.25], [-6.0, 2.0, 0.0, 2.0]])
    # row 2: min -6, spread 8 -> (x + 6) / 8
    expected = [[1.0, 0.0, 0.5, 0.25], [0.0, 1.0, 0.75, 1.0]]
    assert normalize_scores(scores).tolist() == expected


def test_all_equal_gives_zeros_and_all_positive_targets():
    scores = np.array([[7.0, 7.0, 7.0]])
    assert normalize_scores(scores).tolist() == [[0.0, 0.0, 0.0]]
    assert bce_targets(scores).tolist() == [[1.0, 1.0, 1.0]]


def test_targets_use_the_ratio_threshold():
    # normalised: [0, 1, 0.8, 0.79]; 0.8 * max = 0.8 -> 0.8 is in, 0.79 is out
    scores = np.array([[0.0, 100.0, 80.0, 79.0]])
    assert bce_targets(scores).tolist() == [[0.0, 1.0, 1.0, 0.0]]
    assert bce_targets(scores, LabelConfig(positive_ratio=0.75)).tolist() == [[0.0, 1.0, 1.0, 1.0]]


def test_tie_tolerance_counts_near_ties_as_ties():
    scores = np.array([[1.0, 1.005, 1.01]])
    assert normalize_scores(scores).tolist()[0][2] == pytest.approx(1.0)
    assert normalize_scores(scores, LabelConfig(tie_tolerance=0.02)).tolist() == [[0.0, 0.0, 0.0]]


@pytest.mark.parametrize("kwargs", [{"positive_ratio": 1.5}, {"positive_ratio": -0.1}, {"tie_tolerance": -1.0}])
def test_bad_label_config_raises(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        LabelConfig(**kwargs)
