"""Prompt sources: packaged benchmarks, reasoning-gym, HF record converters, the --prompts grammar."""

import json

import pandas as pd
import pytest

from lookahead_ray.data import prompts as P


def test_humaneval_comes_from_the_package_with_its_tests():
    frame = P.humaneval_prompts()
    assert len(frame) == 164
    first = frame.iloc[0]
    assert (first.benchmark, first.prompt_id, first.grader) == ("HumanEval", "0", "code")
    reference = json.loads(first.reference)
    assert reference["entry_point"] == "has_close_elements"
    assert "def check(candidate)" in reference["tests"]
    assert "def has_close_elements" in first.prompt and first.prompt.startswith("Complete the following")


def test_mtbench_has_80_questions_graded_by_a_reward_model():
    frame = P.mtbench_prompts()
    assert len(frame) == 80 and set(frame["grader"]) == {"reward"}
    reference = json.loads(frame.iloc[0].reference)
    assert frame.iloc[0].prompt == reference["turns"][0] and len(reference["turns"]) == 2


def test_reasoning_gym_numeric_answers_are_math_and_others_use_its_scorer():
    arithmetic = P.reasoning_gym_prompts("chain_sum", 3)
    assert set(arithmetic["grader"]) == {"math"} and arithmetic["benchmark"].iloc[0] == "reasoning-gym.chain_sum"
    words = P.reasoning_gym_prompts("spell_backward", 2)
    assert set(words["grader"]) == {"reasoning-gym"}
    assert json.loads(words.iloc[0].reference)["dataset"] == "spell_backward"
    # deterministic: the same seed gives the same problems
    assert P.reasoning_gym_prompts("chain_sum", 3).equals(arithmetic)


def test_hf_record_converters_on_literal_records():
    gsm = P.gsm8k_row(0, {"question": "2+2?", "answer": "two and two\n#### 1,004"})
    assert json.loads(gsm["reference"]) == {"answer": "1004"} and gsm["benchmark"] == "GSM8K"
    math = P.math_row(3, {"problem": "x?", "answer": "\\frac{1}{2}", "unique_id": "test/algebra/1.json"})
    assert math["prompt_id"] == "test/algebra/1.json" and json.loads(math["reference"])["answer"] == "\\frac{1}{2}"
    mbpp = P.mbpp_row(0, {"task_id": 11, "text": "Write f.", "code": "", "test_list": ["assert f(1) == 1"],
                          "test_setup_code": ""})
    assert mbpp["prompt_id"] == "11" and "assert f(1) == 1" in mbpp["prompt"]
    assert json.loads(mbpp["reference"])["tests"] == "assert f(1) == 1\n"


def test_demo_set_is_packaged_and_extends_the_first_one():
    frame = P.load_prompts("demo")
    assert frame["prompt"].is_unique  # a repeated prompt could land in train and in test
    assert frame.groupby("benchmark").size().to_dict() == {
        "HumanEval": 42, "reasoning-gym.basic_arithmetic": 77, "reasoning-gym.chain_sum": 20}
    arithmetic = frame[frame["benchmark"] == "reasoning-gym.basic_arithmetic"]["prompt"]
    assert not arithmetic.str.contains(r"[(/]").any()  # no division, no parentheses
    # A longer list of the same seed starts with the shorter one, so old demo prompts keep their ids.
    first = P.reasoning_gym_prompts("chain_sum", 10, seed=0, min_terms=2, max_terms=2, min_digits=1, max_digits=1)
    sums = frame[frame["benchmark"] == "reasoning-gym.chain_sum"]
    assert list(sums["prompt"].head(10)) == list(first["prompt"])


def test_prompts_grammar_limits_files_and_errors(tmp_path):
    frame = P.load_prompts("humaneval:2, mtbench:1")
    assert list(frame["benchmark"]) == ["HumanEval", "HumanEval", "MT-Bench"]
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt_id": 1, "benchmark": "B", "prompt": "1+1?", "grader": "math",
                                "reference": {"answer": "2"}}) + "\n")
    loaded = P.load_prompts(str(path))
    assert loaded.iloc[0].prompt_id == "1" and json.loads(loaded.iloc[0].reference) == {"answer": "2"}
    with pytest.raises(ValueError, match="unknown source 'nope'"):
        P.load_prompts("nope")
    with pytest.raises(ValueError, match="positive integer"):
        P.load_prompts("humaneval:x")
    with pytest.raises(ValueError, match="duplicate prompt_id"):
        P.load_prompts("humaneval:1,humaneval:1")
    bad = pd.DataFrame([{"prompt_id": "1", "benchmark": "B", "prompt": "p", "grader": "judge", "reference": "{}"}])
    with pytest.raises(ValueError, match="field 'grader'"):
        P.prompt_frame(bad.to_dict("records"))
