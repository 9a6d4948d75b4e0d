"""The real vLLM path: ray.serve.llm's LLMServer (as VLLMEngine) serving SmolLM2-135M-Instruct on CPU
behind the ingress, one non-streamed and one streamed answer, and a chat_template-false candidate
through vLLM's completions API. Minutes: the engine starts once."""

from __future__ import annotations

import importlib.util

import pytest

from lookahead_ray.serving.app import AppArgs, build_app
from tests.tiny_models import save_tiny_bert

pytestmark = [pytest.mark.integration, pytest.mark.vllm, pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")]

NAMES = ("smollm2-terse", "smollm2-plain")


def test_vllm_candidates_answer_and_stream(ray_local, tmp_path):
    from ray import serve

    from lookahead_ray.routers.checkpoint import RouterSpec, build_router, save_router

    spec = RouterSpec(kind="lookahead-mlm", backbone=str(save_tiny_bert(tmp_path / "bert")), candidates=NAMES,
                      max_prompt_len=32, block_len=8)
    checkpoint = save_router(build_router(spec), spec, tmp_path / "router")
    pool = {"candidates": [
        {"name": "smollm2-terse", "model": "smollm2", "engine": "vllm", "system_prompt": "Answer in one word.",
         "sampling": {"max_tokens": 8}, "num_cpus": 1.0},
        {"name": "smollm2-plain", "model": "smollm2", "engine": "vllm", "chat_template": False,
         "sampling": {"max_tokens": 8}, "num_cpus": 1.0},
    ]}
    args = AppArgs(pool=pool, router=str(checkpoint), max_model_len=512, router_threads=1)
    serve.start(proxy_location="Disabled")  # handles only: no HTTP port to collide with
    handle = serve.run(build_app(args), name="vllm", route_prefix=None)
    try:
        user = [{"role": "user", "content": "What is the capital of France?"}]
        out = handle.chat.remote({"model": "lookahead", "messages": user}).result()
        assert out["model"] in NAMES and out["lookahead"]["ranking"][0] in NAMES
        assert 1 <= out["usage"]["completion_tokens"] <= 8 and isinstance(out["choices"][0]["message"]["content"], str)

        plain = handle.chat.remote({"model": "smollm2-plain", "messages": user}).result()
        assert plain["object"] == "chat.completion" and plain["model"] == "smollm2-plain"
        assert isinstance(plain["choices"][0]["message"]["content"], str) and plain["usage"]["completion_tokens"] >= 1

        engine = serve.get_deployment_handle("engine-smollm2", "vllm")
        count = [{"role": "user", "content": "Count from 1 to 5, separated by commas."}]
        request = {"messages": count, "chat_template": True, "max_tokens": 8, "temperature": 0.0, "top_p": 1.0,
                   "seed": 0, "stream": True, "include_usage": True}
        chunks = list(engine.options(stream=True).stream.remote(request))
        text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"])
        assert text and chunks[-1]["usage"]["completion_tokens"] <= 8
        assert engine.complete.remote(dict(request, stream=False)).result()["choices"][0]["message"]["content"]
    finally:
        serve.shutdown()
