"""Grading generated responses: the rule-based graders, the reward model, the routing rows."""

import json

import pandas as pd
import pytest

from lookahead_ray.config import SplitConfig
from lookahead_ray.data import grade as GR
from lookahead_ray.data.schema import check_rows

STUB = "from typing import List\n\n\ndef add(xs: List[int]) -> int:\n    \"\"\"Sum.\"\"\"\n"
HUMANEVAL_REF = {"tests": "def check(candidate):\n    assert candidate([1, 2]) == 3\n", "entry_point": "add",
                 "prefix": STUB}


def test_code_program_completes_a_stub_or_keeps_a_full_function():
    completion = "    return sum(xs)\n\nprint('junk after the function')\n"
    assert GR.code_program(completion, HUMANEVAL_REF) == STUB + "    return sum(xs)\n\n"
    full = "Here:\n```python\ndef add(xs: List[int]) -> int:\n    return sum(xs)\n```"
    program = GR.code_program(full, HUMANEVAL_REF)
    assert program.startswith("from typing import List\n") and "return sum(xs)" in program
    assert GR.code_program("```python\nx = 1\n```", {"tests": "", "entry_point": None}) == "x = 1\n"


@pytest.mark.parametrize("response, score, status", [
    ("    return sum(xs)\n", 1.0, "pass"),
    ("```python\ndef add(xs: List[int]) -> int:\n    return 0\n```", 0.0, "fail"),
    ("```python\ndef add(xs):\n    while True: pass\n```", 0.0, "timeout"),
])
def test_grade_response_code(response, score, status):
    got = GR.grade_response("code", HUMANEVAL_REF, response, timeout_s=2)
    assert got[:2] == (score, status)


def test_grade_response_math_and_reasoning_gym():
    assert GR.grade_response("math", {"answer": "-4"}, "So 5 - 9 = \\boxed{-4}.")[:2] == (1.0, "pass")
    score, status, message = GR.grade_response("math", {"answer": "7"}, "It is 8.")
    assert (score, status) == (0.0, "fail") and "'8'" in message and "'7'" in message
    entry = {"question": "Spell this word backward: cat", "answer": "tac", "metadata": {}}
    assert GR.grade_response("reasoning-gym", {"dataset": "spell_backward", "entry": entry}, "Sure.\ntac")[0] == 1.0
    with pytest.raises(ValueError, match="--reward-model"):
        GR.grade_response("reward", {}, "x")


def test_grade_rows_leaves_reward_rows_pending():
    batch = pd.DataFrame({"grader": ["math", "reward"], "reference": [json.dumps({"answer": "2"}), "{}"],
                          "response": ["2", "hello"]})
    out = GR.GradeRows(timeout_s=2)(batch)
    assert list(out["score"].iloc[:1]) == [1.0] and pd.isna(out["score"].iloc[1])
    assert list(out["status"]) == ["pass", "pending"]


def tiny_reward_model(path) -> str:
    """A random 1-label Llama sequence classifier and a byte-level BPE tokenizer trained here."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["a helpful answer", "a rude answer", "User: hi Assistant: hello"] * 10,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "</s>", "<pad>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", eos_token="</s>")
    tokenizer.save_pretrained(path)  # no pad token: RewardModel falls back to eos
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=1, num_key_value_heads=1, head_dim=32, num_labels=1)
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(path)
    return str(path)


def test_reward_model_scores_each_pair_independently_of_batching(tmp_path):
    model = GR.RewardModel(tiny_reward_model(tmp_path), batch_size=3)
    prompts, responses = ["hi", "hi", "tell me"], ["hello", "a much longer rude answer", "a helpful answer"]
    batched = model.score(prompts, responses)
    one_by_one = [model.score([p], [r])[0] for p, r in zip(prompts, responses)]
    assert batched == pytest.approx(one_by_one, abs=1e-5)
    assert len(set(round(x, 6) for x in batched)) == 3  # different texts, different rewards

    scorer = GR.RewardScorer.__new__(GR.RewardScorer)
    scorer.reward_model = model
    batch = pd.DataFrame({"grader": ["reward", "math"], "prompt": ["hi", "1+1"], "response": ["hello", "2"],
                          "score": [float("nan"), 1.0], "status": ["pending", "pass"], "message": ["", ""]})
    out = scorer(batch)
    assert out["score"].iloc[0] == pytest.approx(batched[0], abs=1e-5) and out["score"].iloc[1] == 1.0
    assert list(out["status"]) == ["scored", "pass"]


def generation_frames():
    prompts = pd.DataFrame({"prompt_id": ["0", "1"], "benchmark": ["B", "B"], "prompt": ["p0", "p1"],
                            "grader": ["math", "math"], "reference": ['{"answer": "1"}'] * 2})
    responses = pd.DataFrame({"prompt_id": ["0", "0", "1", "1"], "benchmark": "B", "candidate": ["x", "y", "y", "x"],
                              "response": ["1", "2", "1", "3"], "input_tokens": 4, "output_tokens": [1, 2, 3, 4],
                              "latency_s": 0.5, "finish_reason": "stop", "shard": 0})
    return prompts, responses


def test_routing_rows_follow_the_pool_order_and_fit_the_schema():
    prompts, responses = generation_frames()
    rows = GR.response_rows(prompts, responses, ("x", "y"))
    graded = GR.GradeRows()(rows)
    frame = GR.routing_frame(graded, prompts, ("x", "y"), SplitConfig())
    check_rows(frame, "graded")
    assert list(frame["responses"].iloc[1]) == ["3", "1"] and list(frame["scores"].iloc[1]) == [0.0, 1.0]
    aux = json.loads(frame["aux"].iloc[0])
    assert aux["output_tokens"] == [1, 2] and aux["grades"][0]["status"] == "pass"
    table = GR.mean_scores(frame)
    assert table.loc["B", "x"] == 0.5 and table.loc["B", "y"] == 0.5
    assert "x" in GR.format_scores(frame)


def test_missing_or_duplicated_responses_are_errors():
    prompts, responses = generation_frames()
    with pytest.raises(ValueError, match=r"1 \(prompt, candidate\) responses are missing, e.g. \(B, 1, x\)"):
        GR.response_rows(prompts, responses.iloc[:3], ("x", "y"))
    with pytest.raises(ValueError, match="duplicate response"):
        GR.response_rows(prompts, pd.concat([responses, responses.iloc[:1]]), ("x", "y"))
