"""Generation on Ray Data with a tiny random Llama: both engines agree; a killed run resumes exactly."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lookahead_ray.config import CandidateSpec, PoolConfig, SamplingConfig
from lookahead_ray.data.generate import GenerateOptions, generate, read_generation, shard_path
from lookahead_ray.data.prompts import prompt_frame

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
CORPUS = ["the cat sat on the mat", "two plus two is four", "def add(a, b): return a + b",
          "hello world, how are you today?", "user: hi\nassistant: hello"] * 20
CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant:{% endif %}")


def build_tiny_llama(path: Path) -> str:
    """A 2-layer random Llama (float32) and a byte-level BPE tokenizer trained here, saved to `path`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>",
                                        eos_token="</s>", pad_token="<pad>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=32, max_position_embeddings=512,
                         bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # sharper logits: greedy choices far from ties
        model.lm_head.weight.mul_(20.0)
    model.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def demo_prompts(n: int):
    rows = [{"prompt_id": str(i), "benchmark": "B", "prompt": f"what is {i} plus {i}?", "grader": "math",
             "reference": json.dumps({"answer": str(2 * i)})} for i in range(n)]
    return prompt_frame(rows)


def spec(name: str, model: str, engine: str) -> CandidateSpec:
    return CandidateSpec(name=name, model=model, engine=engine, system_prompt="be brief",
                         sampling=SamplingConfig(temperature=0.0, max_tokens=12), num_cpus=0.5)


@pytest.mark.vllm
def test_vllm_and_transformers_give_identical_greedy_output(ray_local, tiny_model, tmp_path):
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed")
    pool = PoolConfig((spec("tiny-vllm", tiny_model, "vllm"), spec("tiny-hf", tiny_model, "hf")))
    options = GenerateOptions(shard_size=4, batch_size=4, dtype="float32", gpu_memory_utilization=0.1,
                              max_model_len=256)
    summary = generate(pool, demo_prompts(6), tmp_path / "gen", options)
    assert summary["rows"] == 12
    _, responses, _ = read_generation(tmp_path / "gen")
    by = {name: part.set_index("prompt_id").sort_index() for name, part in responses.groupby("candidate")}
    vllm, hf = by["tiny-vllm"], by["tiny-hf"]
    assert list(vllm["response"]) == list(hf["response"])
    assert list(vllm["output_tokens"]) == list(hf["output_tokens"])
    assert list(vllm["input_tokens"]) == list(hf["input_tokens"])
    assert list(vllm["finish_reason"]) == list(hf["finish_reason"])
    assert (vllm["output_tokens"] > 0).all() and all(isinstance(r, str) and r for r in vllm["response"])


def write_pool(path: Path, model: str) -> None:
    import yaml

    candidates = [{"name": "greedy", "model": model, "engine": "hf", "num_cpus": 0.5,
                   "sampling": {"temperature": 0.0, "max_tokens": 24}},
                  {"name": "sampled", "model": model, "engine": "hf", "num_cpus": 0.5, "chat_template": False,
                   "sampling": {"temperature": 0.8, "top_p": 0.9, "max_tokens": 24, "seed": 1}}]
    path.write_text(yaml.safe_dump({"candidates": candidates}))


def test_generate_resumes_after_kill_9_with_one_row_per_prompt_and_candidate(ray_local, tiny_model, tmp_path):
    n_prompts, shard_size = 48, 2
    prompts_file, pool_file, out = tmp_path / "prompts.jsonl", tmp_path / "pool.yaml", tmp_path / "gen"
    prompts_file.write_text("".join(json.dumps(r) + "\n" for r in demo_prompts(n_prompts).to_dict("records")))
    write_pool(pool_file, tiny_model)
    command = [sys.executable, "-m", "lookahead_ray", "generate", "--pool", str(pool_file), "--prompts",
               str(prompts_file), "--out", str(out), "--shard-size", str(shard_size), "--batch-size", "2",
               "--address", ray_local.get_runtime_context().gcs_address]  # a second driver on the session's Ray
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    run = subprocess.Popen(command, cwd=REPO, env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = shard_path(out, "greedy", 0)
    try:
        deadline = time.monotonic() + 240
        while not first.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # the driver, mid-run (Ray then ends its job's actors)
        run.wait()
    assert first.exists(), "the first run wrote no shard before the deadline"
    before = {p: p.stat().st_mtime_ns for p in (out / "responses").glob("*/shard-*.parquet")}
    total_shards = 2 * n_prompts // shard_size
    assert 0 < len(before) < total_shards, f"kill landed after {len(before)} of {total_shards} shards"

    from lookahead_ray.config import load_pool  # resume in this process
    from lookahead_ray.data.prompts import load_prompts

    summary = generate(load_pool(pool_file), load_prompts(str(prompts_file)), out,
                       GenerateOptions(shard_size=shard_size, batch_size=2))
    assert summary["shards_done_before"] == len(before)
    assert summary["shards_generated"] == total_shards - len(before)
    _, responses, _ = read_generation(out)
    counts = responses.groupby(["benchmark", "prompt_id", "candidate"]).size()
    assert len(counts) == 2 * n_prompts and (counts == 1).all()
    assert {p: p.stat().st_mtime_ns for p in before} == before  # finished shards were not redone
    assert not list(out.rglob("*.tmp-*"))  # a killed write's partial file is swept on resume
    assert set(responses["finish_reason"]) <= {"stop", "length"}
    assert (responses["input_tokens"] > 0).all() and (responses["latency_s"] > 0).all()


def write_generation(out: Path) -> None:
    """A generation folder with known answers: math, sandboxed code and a reward-model prompt."""
    import pandas as pd

    from lookahead_ray.data.generate import prepare_output, write_atomic

    code_ref = {"tests": "assert add(2, 3) == 5\n", "entry_point": None, "prefix": ""}
    rows = [{"prompt_id": "m", "benchmark": "B", "prompt": "2+3?", "grader": "math",
             "reference": json.dumps({"answer": "5"})},
            {"prompt_id": "c", "benchmark": "C", "prompt": "write add", "grader": "code",
             "reference": json.dumps(code_ref)},
            {"prompt_id": "r", "benchmark": "MT-Bench", "prompt": "say hi", "grader": "reward",
             "reference": json.dumps({"category": "writing", "turns": ["say hi", "again"]})}]
    pool = PoolConfig((spec("good", "m", "hf"), spec("bad", "m", "hf")))
    prepare_output(out, pool, prompt_frame(rows), GenerateOptions(shard_size=3))
    answers = {"good": ["it is 5", "```python\ndef add(a, b):\n    return a + b\n```", "hi!"],
               "bad": ["it is 6", "```python\nimport os\nos._exit(0)\n```", "no."]}
    for name, texts in answers.items():
        frame = pd.DataFrame({"prompt_id": ["m", "c", "r"], "benchmark": ["B", "C", "MT-Bench"], "candidate": name,
                              "response": texts, "input_tokens": 5, "output_tokens": 3, "latency_s": 0.1,
                              "finish_reason": "stop", "shard": 0})
        write_atomic(frame, shard_path(out, name, 0))


def test_grade_writes_the_routing_dataset_with_rule_and_reward_scores(ray_local, tiny_model, tmp_path, capsys):
    from lookahead_ray.cli import main
    from lookahead_ray.data.schema import read_dataset, read_manifest

    write_generation(tmp_path / "gen")
    assert main(["grade", "--in", str(tmp_path / "gen"), "--out", str(tmp_path / "none")]) == 2
    assert "--reward-model" in capsys.readouterr().err
    # the tiny causal LM loads as a sequence classifier with a fresh head: a random reward model
    assert main(["grade", "--in", str(tmp_path / "gen"), "--out", str(tmp_path / "ds"), "--reward-model", tiny_model,
                 "--workers", "2", "--timeout", "5"]) == 0
    frame = read_dataset(tmp_path / "ds").set_index("prompt_id")
    assert read_manifest(tmp_path / "ds")["candidates"] == ["good", "bad"]
    assert list(frame.loc["m", "scores"]) == [1.0, 0.0] and list(frame.loc["c", "scores"]) == [1.0, 0.0]
    rewards = list(frame.loc["r", "scores"])
    assert all(isinstance(x, float) and x == x for x in rewards) and rewards[0] != rewards[1]
    aux = json.loads(frame.loc["c", "aux"])
    assert aux["grades"][1]["status"] == "fail" and "exited" in aux["grades"][1]["message"]
    assert "good" in capsys.readouterr().out  # the score table
