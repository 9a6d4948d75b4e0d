"""The transformers engine honours every field it accepts (stop, logprobs, penalties, seed, tiny
temperatures) and refuses with a 400 what it cannot honour; through the ingress's HTTP app in process
on a tiny Llama."""

from __future__ import annotations

import json

import pytest
import torch
from fastapi.testclient import TestClient

from lookahead_ray.data.hf_core import penalties_processor
from lookahead_ray.serving.engines import TransformersEngine
from tests.serve_fakes import NAMES, api
from tests.tiny_models import save_tiny_llama

USER = [{"role": "user", "content": "What is 12 plus 30?"}]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    path = save_tiny_llama(tmp_path_factory.mktemp("llama") / "llama")
    engine = TransformersEngine(str(path), threads=1, max_model_len=256, name="tiny")
    specs = {n: engine for n in NAMES}  # one engine behind every candidate (its chat_template is off below)
    from dataclasses import replace

    from tests.serve_fakes import settings

    pool = settings().pool
    pool = type(pool)(tuple(replace(s, chat_template=False, sampling=replace(s.sampling, max_tokens=12))
                            for s in pool.candidates))
    return TestClient(api(specs, pool=pool, max_model_len=256))


def chat(client, **body):
    response = client.post("/v1/chat/completions", json={"model": "small", "messages": USER, **body})
    assert response.status_code == 200, response.text
    return response.json()


def streamed_text(client, **body) -> str:
    response = client.post("/v1/chat/completions", json={"model": "small", "messages": USER, "stream": True, **body})
    lines = [line[6:] for line in response.text.splitlines() if line.startswith("data: ") and line != "data: [DONE]"]
    return "".join((c["choices"][0]["delta"].get("content") or "") for c in map(json.loads, lines) if c.get("choices"))


def test_a_tiny_temperature_decodes_greedily_instead_of_nan(client):
    greedy = chat(client, temperature=0)["choices"][0]["message"]["content"]
    for temperature in (1e-300, 5e-324, 1e-6):
        assert chat(client, temperature=temperature, seed=1)["choices"][0]["message"]["content"] == greedy


def test_a_seed_anywhere_in_int64_samples(client):
    for seed in (-2**63, 2**63 - 1, 0):
        a = chat(client, temperature=1.0, seed=seed)["choices"][0]["message"]["content"]
        assert a == chat(client, temperature=1.0, seed=seed)["choices"][0]["message"]["content"]  # reproducible


def test_stop_cuts_the_answer_before_the_sequence_streamed_or_not(client):
    full = chat(client, max_tokens=12)["choices"][0]["message"]["content"]
    assert len(full) >= 6, full
    stop = full[3:5]
    cut = chat(client, max_tokens=12, stop=[stop])
    assert cut["choices"][0]["message"]["content"] == full[:full.index(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert streamed_text(client, max_tokens=12, stop=stop) == full[:full.index(stop)]
    assert streamed_text(client, max_tokens=12) == full


def test_logprobs_come_back_for_each_answer_token(client):
    out = chat(client, max_tokens=6, logprobs=True, top_logprobs=3)
    content = out["choices"][0]["logprobs"]["content"]
    assert 1 <= len(content) <= out["usage"]["completion_tokens"]
    for entry in content:
        assert entry["logprob"] <= 0 and len(entry["top_logprobs"]) == 3
        assert entry["logprob"] == pytest.approx(entry["top_logprobs"][0]["logprob"])  # greedy: the best token
    assert chat(client, max_tokens=6)["choices"][0]["logprobs"] is None


def test_what_transformers_cannot_honour_is_a_400_naming_the_field(client):
    cases = [({"response_format": {"type": "json_object"}}, "response_format"),
             ({"stream": True, "logprobs": True}, "logprobs"),
             ({"max_tokens": 250, "messages": [{"role": "user", "content": "word " * 40}]}, "max_tokens")]
    for body, param in cases:
        response = client.post("/v1/chat/completions", json={"model": "small", "messages": USER, **body})
        assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text


def test_penalties_subtract_from_generated_tokens_only():
    # prompt [4, 4] (width 2), generated [3, 3, 1]: counts token 3 -> 2, token 1 -> 1, token 4 -> 0
    processor = penalties_processor(presence=0.5, frequency=0.25, prompt_width=2)
    scores = processor(torch.tensor([[4, 4, 3, 3, 1]]), torch.zeros(1, 5))
    assert scores.tolist() == [[0.0, -0.75, 0.0, -1.0, 0.0]]  # 1: 0.25 + 0.5; 3: 2 * 0.25 + 0.5


def test_penalties_reach_the_generation(client, monkeypatch):
    import lookahead_ray.data.hf_core as core

    seen = []

    def recording(presence, frequency, prompt_width):
        processor = penalties_processor(presence, frequency, prompt_width)

        def call(input_ids, scores):
            seen.append((presence, frequency, input_ids.shape[1] - prompt_width))
            return processor(input_ids, scores)

        return call

    monkeypatch.setattr(core, "penalties_processor", recording)
    chat(client, max_tokens=4, frequency_penalty=2.0, presence_penalty=-1.5)
    assert seen and seen[0] == (-1.5, 2.0, 0) and len(seen) == 4  # every step, from the first generated token
    seen.clear()
    chat(client, max_tokens=4)
    assert not seen  # no penalties asked: no processor
