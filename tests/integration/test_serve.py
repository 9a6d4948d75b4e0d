"""The Serve app end to end on tiny models: through DeploymentHandles and over HTTP with the openai
client; streaming; every bad input; fallback when a candidate raises; a killed replica; auth on/off.

One app for the module: a tiny Lookahead-MLM router registered in a temporary MLflow registry (the
way `make demo` registers its router) and three transformers candidates on two tiny Llamas:
`tiny-a`, `broken` (wants a chat template the tokenizer lacks: it raises on every request, and it is
the cheapest, so `router-lookahead_mlm-1.0` always ranks it first) and `tiny-b`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from types import SimpleNamespace

import httpx
import pytest

from lookahead_ray.serving.app import API_KEY_ENV, AppArgs, build_app
from lookahead_ray.serving.openai_api import OpenAIError
from tests.tiny_models import save_tiny_bert, save_tiny_llama

pytestmark = pytest.mark.integration

NAMES = ("tiny-a", "broken", "tiny-b")
APP = "lookahead"
ROUTED = "router-lookahead_mlm-1.0"
USER = [{"role": "user", "content": "What is 12 plus 30?"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def register_router(checkpoint, root) -> str:
    """Register `checkpoint` as models:/lookahead-router/1 in a fresh sqlite store under `root`."""
    import mlflow

    from lookahead_ray.config import DataConfig, TrainConfig
    from lookahead_ray.registry import register_router
    from lookahead_ray.tracking import start_training_run

    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg = TrainConfig(router="lookahead-mlm", data=DataConfig(candidates=NAMES), register_as="lookahead-router",
                      experiment="serve-test")
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.create_experiment("serve-test", artifact_location=(root / "artifacts").as_uri())
        run_id = start_training_run(cfg)
        assert register_router(run_id, str(checkpoint), {}, cfg) == "models:/lookahead-router/1"
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI")
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous
    return uri


@pytest.fixture(scope="module")
def served(ray_local, tmp_path_factory):
    from ray import serve

    from lookahead_ray.routers.checkpoint import RouterSpec, build_router, save_router

    root = tmp_path_factory.mktemp("serve")
    llama_a = save_tiny_llama(root / "llama_a")
    llama_b = shutil.copytree(llama_a, root / "llama_b")
    spec = RouterSpec(kind="lookahead-mlm", backbone=str(save_tiny_bert(root / "bert")), candidates=NAMES,
                      max_prompt_len=32, block_len=8)
    checkpoint = save_router(build_router(spec), spec, root / "router")
    common = {"engine": "hf", "chat_template": False, "num_cpus": 0.25, "sampling": {"max_tokens": 8}}
    pool = {"candidates": [
        {"name": "tiny-a", "model": str(llama_a), "cost_per_1k_input": 1.0, **common},
        {"name": "broken", "model": str(llama_a), **dict(common, chat_template=True)},
        {"name": "tiny-b", "model": str(llama_b), "system_prompt": "Be brief.", "cost_per_1k_input": 1.0,
         **dict(common, sampling={"temperature": 0.7, "max_tokens": 8, "seed": 1})},
    ]}
    # candidate_timeout_s 60: a killed engine replica's replacement loads its model before it answers,
    # and a timed-out answer is a 504, not a fallback; on a busy 2-core machine that took over 20 s.
    args = {"pool": pool, "router": "models:/lookahead-router/latest",
            "tracking_uri": register_router(checkpoint, root), "candidate_timeout_s": 60.0, "router_timeout_s": 10.0,
            "max_prompt_chars": 2000, "max_model_len": 256, "hf_threads": 1, "router_threads": 1}
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    handle = serve.run(build_app(AppArgs(**args)), name=APP, route_prefix="/")
    yield SimpleNamespace(handle=handle, url=f"http://127.0.0.1:{port}", args=args)
    serve.delete(APP)
    serve.shutdown()


def client(served, api_key: str = "unused"):
    from openai import OpenAI

    return OpenAI(base_url=f"{served.url}/v1", api_key=api_key, max_retries=0, timeout=120)


# ---------------------------------------------------------------------------------------------
# Through DeploymentHandles
# ---------------------------------------------------------------------------------------------


def test_handles_router_engine_and_ingress(served):
    from ray import serve

    router = serve.get_deployment_handle("LookaheadRouter", APP)
    scores = router.score.remote("What is 12 plus 30?").result()
    assert len(scores) == 3 and all(0.0 < p < 1.0 for p in scores)
    assert router.candidates.remote().result() == list(NAMES)

    out = served.handle.chat.remote({"model": "lookahead", "messages": USER}).result()
    assert out["object"] == "chat.completion" and out["model"] in NAMES
    assert out["lookahead"]["router"] == "lookahead_mlm"
    assert set(out["lookahead"]["scores"]) == set(NAMES) and out["lookahead"]["ranking"][0] in NAMES
    assert isinstance(out["choices"][0]["message"]["content"], str)

    direct = served.handle.chat.remote({"model": "tiny-a", "messages": USER, "max_tokens": 4}).result()
    assert direct["model"] == "tiny-a" and direct["lookahead"]["scores"] is None
    assert direct["usage"]["completion_tokens"] <= 4

    with pytest.raises(OpenAIError) as err:
        served.handle.chat.remote({"model": "nope", "messages": USER}).result()
    assert err.value.status == 404


def test_router_batches_concurrent_calls(served):
    from ray import serve

    router = serve.get_deployment_handle("LookaheadRouter", APP)
    before = router.stats.remote().result()
    responses = [router.score.remote(f"prompt {i}") for i in range(16)]
    assert all(len(r.result()) == 3 for r in responses)
    after = router.stats.remote().result()
    assert after["requests"] - before["requests"] == 16
    assert after["batches"] - before["batches"] < 16  # some calls shared a forward pass


# ---------------------------------------------------------------------------------------------
# Over HTTP with the openai client
# ---------------------------------------------------------------------------------------------


def test_models_and_chat_with_openai_client(served):
    api = client(served)
    ids = [m.id for m in api.models.list().data]
    assert ids[:4] == ["lookahead", "router-lookahead_mlm-0.0", "router-lookahead_mlm-0.5", "router-lookahead_mlm-1.0"]
    assert ids[4:] == list(NAMES)

    raw = api.chat.completions.with_raw_response.create(model="router-lookahead_mlm-0.5", messages=USER)
    resp = raw.parse()
    assert raw.headers["x-lookahead-candidate"] == resp.model and resp.model in NAMES
    extra = resp.model_extra["lookahead"]
    assert extra["cost_weight"] == 0.5 and extra["candidate"] == resp.model
    assert set(extra["scores"]) == set(NAMES) and extra["routing_ms"] > 0

    resp = api.chat.completions.create(model="tiny-b", messages=USER, max_tokens=3)
    assert resp.model == "tiny-b" and resp.usage.completion_tokens <= 3
    assert httpx.get(f"{served.url}/health").json() == {"status": "ok"}


def test_streaming_passes_the_candidates_chunks(served):
    api = client(served)
    with api.chat.completions.with_streaming_response.create(model="tiny-a", messages=USER, stream=True,
                                                             stream_options={"include_usage": True}) as raw:
        assert raw.headers["x-lookahead-candidate"] == "tiny-a"
        chunks = list(raw.parse())
    assert {c.model for c in chunks} == {"tiny-a"}
    assert chunks[0].choices[0].delta.role == "assistant" and "lookahead" in chunks[0].model_extra
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 8
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    direct = api.chat.completions.create(model="tiny-a", messages=USER)
    assert text == direct.choices[0].message.content  # greedy: the stream is the same answer

    routed = list(api.chat.completions.create(model="lookahead", messages=USER, stream=True))
    assert routed[0].model_extra["lookahead"]["router"] == "lookahead_mlm"


# ---------------------------------------------------------------------------------------------
# Bad input: a 4xx with an OpenAI error body, never a 500, never a crashed replica
# ---------------------------------------------------------------------------------------------

LONG = "word " * 300  # 1500 characters: under max_prompt_chars, over the engine's 256-token context
BAD = {
    "malformed JSON": (b'{"model": "lookahead", "messages": [', 400, "invalid_json"),
    "empty body": (b"", 400, "invalid_json"),
    "not an object": (b"[1, 2]", 400, "invalid_body"),
    "missing model": ({"messages": USER}, 400, "missing_field"),
    "missing messages": ({"model": "lookahead"}, 400, "missing_field"),
    "empty messages": ({"model": "lookahead", "messages": []}, 400, "invalid_value"),
    "wrong role": ({"model": "lookahead", "messages": [{"role": "robot", "content": "hi"}]}, 400, "invalid_value"),
    "no user message": ({"model": "lookahead", "messages": [{"role": "system", "content": "hi"}]}, 400,
                        "invalid_value"),
    "missing content": ({"model": "lookahead", "messages": [{"role": "user"}]}, 400, "missing_field"),
    "over-long prompt": ({"model": "lookahead", "messages": [{"role": "user", "content": "x" * 2001}]}, 400,
                         "context_length_exceeded"),
    "over the candidate's context": ({"model": "tiny-a", "messages": [{"role": "user", "content": LONG}]}, 400,
                                     "context_length_exceeded"),
    "unknown model": ({"model": "gpt-17", "messages": USER}, 404, "model_not_found"),
    "unknown router": ({"model": "router-knn-0.5", "messages": USER}, 404, "model_not_found"),
    "cost weight above 1 in the name": ({"model": "router-lookahead_mlm-1.5", "messages": USER}, 400,
                                        "invalid_cost_weight"),
    "negative cost weight in the name": ({"model": "router-lookahead_mlm--0.1", "messages": USER}, 400,
                                         "invalid_cost_weight"),
    "cost weight not a number": ({"model": "router-lookahead_mlm-abc", "messages": USER}, 400,
                                 "invalid_cost_weight"),
    "cost_weight out of range": ({"model": "lookahead", "messages": USER, "cost_weight": 2.0}, 400, "invalid_value"),
    "messages not a list": ({"model": "lookahead", "messages": "hi"}, 400, "invalid_value"),
    "content a number": ({"model": "lookahead", "messages": [{"role": "user", "content": 5}]}, 400, "invalid_value"),
    "max_tokens a string": ({"model": "lookahead", "messages": USER, "max_tokens": "10"}, 400, "invalid_value"),
    "max_tokens zero": ({"model": "lookahead", "messages": USER, "max_tokens": 0}, 400, "invalid_value"),
    "stream a string": ({"model": "lookahead", "messages": USER, "stream": "yes"}, 400, "invalid_value"),
    "temperature a string": ({"model": "lookahead", "messages": USER, "temperature": "hot"}, 400, "invalid_value"),
    "model a number": ({"model": 5, "messages": USER}, 400, "invalid_value"),
    "n above 1": ({"model": "lookahead", "messages": USER, "n": 2}, 400, "invalid_value"),
    "a field not honoured": ({"model": "lookahead", "messages": USER, "tools": [], "tool_choice": "required"}, 400,
                             "unsupported_parameter"),
    "seed beyond int64": ({"model": "tiny-a", "messages": USER, "seed": 2**63}, 400, "invalid_value"),
    "max_tokens 1e23": ({"model": "tiny-a", "messages": USER, "max_tokens": 10**23}, 400, "invalid_value"),
    "a JSON answer from transformers": ({"model": "tiny-a", "messages": USER, "response_format": {"type": "json_object"}},
                                        400, "unsupported_parameter"),
    "100,000 empty messages": (json.dumps({"model": "lookahead", "messages": [{"role": "user", "content": ""}] * 100_000})
                               .encode(), 413, "body_too_large"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_4xx_with_an_openai_error(served, case):
    body, status, code = BAD[case]
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(f"{served.url}/v1/chat/completions", content=content,
                          headers={"content-type": "application/json"}, timeout=120)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and error["type"] == "invalid_request_error"
    assert error["id"].startswith("err-")


def test_openai_accepts_stream_null_and_an_integral_n(served):
    response = httpx.post(f"{served.url}/v1/chat/completions", timeout=120,
                          json={"model": "tiny-a", "messages": USER, "stream": None, "n": 1.0, "temperature": 1e-300})
    assert response.status_code == 200 and response.json()["choices"][0]["finish_reason"] in ("stop", "length")


def test_unknown_route_and_method_are_openai_errors_and_the_app_stays_healthy(served):
    from ray import serve

    assert httpx.get(f"{served.url}/v1/nope").json()["error"]["message"]
    response = httpx.get(f"{served.url}/v1/chat/completions")
    assert response.status_code == 405 and "error" in response.json()
    status = serve.status().applications[APP]
    assert status.status == "RUNNING"
    assert all(d.status == "HEALTHY" for d in status.deployments.values())


# ---------------------------------------------------------------------------------------------
# Fallback and replica failure
# ---------------------------------------------------------------------------------------------


def test_fallback_when_the_chosen_candidate_raises(served):
    api = client(served)
    raw = api.chat.completions.with_raw_response.create(model=ROUTED, messages=USER)
    resp = raw.parse()
    extra = resp.model_extra["lookahead"]
    assert extra["ranking"][0] == "broken"  # the cheapest, and the cost weight is 1
    assert extra["fallback"] is True and extra["failed"][0]["candidate"] == "broken"
    assert extra["failed"][0]["error"].startswith("failed (error id err-")  # the exception text is in the log
    assert resp.model == extra["ranking"][1] == raw.headers["x-lookahead-candidate"]
    assert raw.headers["x-lookahead-fallback-from"] == "broken"

    chunks = list(api.chat.completions.create(model=ROUTED, messages=USER, stream=True))
    assert chunks[0].model_extra["lookahead"]["failed"][0]["candidate"] == "broken"
    assert chunks[0].model == extra["ranking"][1]

    # asked for directly, a failing candidate has no fallback: 503, not 500
    response = httpx.post(f"{served.url}/v1/chat/completions", json={"model": "broken", "messages": USER}, timeout=120)
    assert response.status_code == 503 and response.json()["error"]["code"] == "candidates_unavailable"


def test_a_killed_engine_replica_is_restarted_while_traffic_continues(served):
    import ray
    from ray import serve

    def replicas() -> set[str]:
        return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                if a["name"].startswith(f"SERVE_REPLICA::{APP}#engine-llama_b#")}

    (victim,) = replicas()
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    api = client(served)
    for _ in range(4):  # routed traffic keeps being answered: by tiny-b's new replica or by a fallback
        assert api.chat.completions.create(model="lookahead", messages=USER).model in ("tiny-a", "tiny-b")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        deployment = serve.status().applications[APP].deployments["engine-llama_b"]
        if deployment.status == "HEALTHY" and replicas() and replicas() != {victim}:
            break
        time.sleep(1)
    assert replicas() and victim not in replicas()
    assert api.chat.completions.create(model="tiny-b", messages=USER).model == "tiny-b"


def test_a_killed_router_replica_is_replaced_and_requests_still_answered(served):
    import ray
    from ray import serve

    def replicas() -> set[str]:
        return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                if a["name"].startswith(f"SERVE_REPLICA::{APP}#LookaheadRouter#")}

    (victim,) = replicas()
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    resp = client(served).chat.completions.create(model="lookahead", messages=USER)
    extra = resp.model_extra["lookahead"]
    assert resp.model in ("tiny-a", "tiny-b")
    assert extra["scores"] is not None or extra["router_error"]  # a new replica scored it, or cost ranking
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (replicas() - {victim}):
        time.sleep(1)
    assert replicas() and victim not in replicas()


# ---------------------------------------------------------------------------------------------
# Auth (last: it redeploys the ingress with a key; the router and engines are kept)
# ---------------------------------------------------------------------------------------------


def test_auth_off_then_on_from_env(served, monkeypatch):
    from ray import serve

    assert client(served, api_key="anything").models.list().data  # off: any or no key
    assert httpx.get(f"{served.url}/v1/models").status_code == 200

    monkeypatch.setenv(API_KEY_ENV, "s3cret")
    serve.run(build_app(AppArgs(**served.args)), name=APP, route_prefix="/")
    response = httpx.get(f"{served.url}/v1/models")
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    wrong = httpx.post(f"{served.url}/v1/chat/completions", json={"model": "tiny-a", "messages": USER},
                       headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert client(served, api_key="s3cret").chat.completions.create(model="tiny-a", messages=USER).model == "tiny-a"
    assert httpx.get(f"{served.url}/health").status_code == 200  # health stays open for load balancers
    for page in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(f"{served.url}{page}").status_code == 401, page
    assert httpx.get(f"{served.url}/openapi.json", headers={"authorization": "Bearer s3cret"}).status_code == 200
