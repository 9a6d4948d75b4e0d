import numpy as np
import pandas as pd
import pytest
import torch

from lookahead_ray.routers.base import route
from lookahead_ray.routers.baselines import FixedRouter, KNNRouter, OracleRouter, RandomRouter


def _batch(n, benchmark="GSM8K"):
    return {"prompt_id": [str(i) for i in range(n)], "benchmark": [benchmark] * n, "prompt": ["p"] * n,
            "scores": [[0.0, 1.0, 0.0]] * n}


def test_route_argmax_and_cost_knob():
    scores = torch.tensor([[0.9, 0.85, 0.1]])
    assert route(scores).tolist() == [0]
    assert route(scores, costs=[10.0, 1.0, 0.0], cost_weight=0.1).tolist() == [1]
    with pytest.raises(ValueError, match="cost_weight"):
        route(scores, costs=[1.0, 1.0, 1.0], cost_weight=1.5)


def test_oracle_and_fixed():
    assert route(OracleRouter(3).score(_batch(2))).tolist() == [1, 1]
    assert route(FixedRouter(3, 2).score(_batch(2))).tolist() == [2, 2]
    with pytest.raises(ValueError, match="fixed-3"):
        FixedRouter(3, 3)


def test_random_is_seeded_per_prompt_and_roughly_uniform():
    router = RandomRouter(5, seed=1)
    batch = _batch(5000)
    picks = route(router.score(batch))
    again = route(router.score({k: v[::-1] for k, v in batch.items()}))
    assert picks.tolist() == again.flip(0).tolist()  # order does not matter
    shares = np.bincount(picks.numpy(), minlength=5) / 5000
    assert np.allclose(shares, 0.2, atol=0.03)
    assert picks.tolist() != route(RandomRouter(5, seed=2).score(batch)).tolist()


class _BagOfWords:
    """A tiny deterministic encoder: unit vectors over a fixed word list."""

    words = ["integral", "derivative", "python", "function", "poem", "story"]

    def encode(self, texts):
        vectors = np.array([[t.split().count(w) for w in self.words] for t in texts], dtype=np.float32) + 1e-3
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_knn_averages_the_neighbours_normalised_scores():
    fit = pd.DataFrame({
        "prompt": ["integral derivative", "derivative integral", "python function", "function python"],
        "scores": [[1.0, 0.0], [1.0, 0.5], [0.0, 1.0], [0.2, 1.0]],
    })
    router = KNNRouter(2, fit, _BagOfWords(), k=2)
    scores = router.score({"prompt": ["integral derivative derivative", "python python function"]})
    # normalised fit scores: [1, 0], [1, 0], [0, 1], [0, 1]
    assert scores.tolist() == [[1.0, 0.0], [0.0, 1.0]]
