"""The vLLM engine forwards every field of an engine request and turns vLLM's refusals into 4xx
engine errors (never a 200, never a raise that would fall back). No engine is started: the request
models and the converters only. Needs the vllm module."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("vllm")

from lookahead_ray.serving.vllm_engine import (  # noqa: E402
    VLLMEngine,
    as_error,
    completion_as_chat,
    rejected,
)

SCHEMA = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}, "description": None,
                                                 "strict": None}}


def build(request: dict, stream: bool):
    """VLLMEngine.vllm_request without an LLMServer (it reads only the model id)."""
    return VLLMEngine.vllm_request(SimpleNamespace(_llm_config=SimpleNamespace(model_id="engine-x")), request, stream)


def request(**fields):
    return {"messages": [{"role": "user", "content": "hi"}], "chat_template": True, "max_tokens": 8,
            "temperature": 0.5, "top_p": 0.9, "seed": -2**63, "stop": ["END"], "logprobs": True, "top_logprobs": 2,
            "presence_penalty": 0.5, "frequency_penalty": -1.0, "response_format": SCHEMA, "stream": False,
            "include_usage": False, **fields}


def test_every_field_reaches_the_chat_request():
    built = build(request(), stream=False)
    assert (built.model, built.max_tokens, built.seed, built.stop) == ("engine-x", 8, -2**63, ["END"])
    assert (built.logprobs, built.top_logprobs, built.presence_penalty, built.frequency_penalty) == (True, 2, 0.5, -1.0)
    assert built.response_format.type == "json_schema"


def test_a_plain_prompt_candidate_gets_a_completion_request_with_its_logprobs_count():
    built = build(request(chat_template=False, response_format=None), stream=True)
    assert built.prompt == "hi" and built.logprobs == 2 and built.stream_options.include_usage is False


def test_a_field_vllm_refuses_is_a_400_naming_it():
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        build(request(seed=2**63), stream=False)
    out = rejected(err.value)
    assert out["status"] == 400 and out["error"]["param"] == "seed" and "errors.pydantic.dev" not in str(out)


def test_error_bodies_become_engine_errors_or_failures():
    refused = as_error({"error": {"message": "max_tokens is too large. For further information visit https://x.y/z\n"
                                             "Traceback line", "type": "BadRequestError", "code": 400}})
    assert refused["status"] == 400 and refused["error"]["message"] == "max_tokens is too large."
    with pytest.raises(RuntimeError):
        as_error({"error": {"message": "engine dead", "code": 500}})


def test_completion_logprobs_become_chat_logprobs():
    body = {"id": "c", "choices": [{"text": "ab", "finish_reason": "stop",
                                    "logprobs": {"tokens": ["a", "b"], "token_logprobs": [-0.1, -0.2],
                                                 "top_logprobs": [{"a": -0.1, "c": -2.0}, {"b": -0.2}]}}]}
    choice = completion_as_chat(body)["choices"][0]
    assert choice["message"]["content"] == "ab"
    assert choice["logprobs"]["content"][0] == {"token": "a", "logprob": -0.1, "bytes": [97], "top_logprobs": [
        {"token": "a", "logprob": -0.1, "bytes": [97]}, {"token": "c", "logprob": -2.0, "bytes": [99]}]}
