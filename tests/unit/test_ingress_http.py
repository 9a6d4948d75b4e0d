"""The ingress's HTTP app in process (FastAPI TestClient over a Gateway with fake router and engines):
limits, failing closed, error ids, timeouts, auth. No Ray cluster."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from lookahead_ray.serving.app import AppArgs
from lookahead_ray.serving.auth import check_exposure
from tests.serve_fakes import NAMES, FakeEngine, api

USER = [{"role": "user", "content": "What is 12 plus 30?"}]
URL = "/v1/chat/completions"


def post(client: TestClient, **body):
    return client.post(URL, json={"model": "lookahead", "messages": USER, **body})


def events(response) -> list:
    """The SSE payloads of a streamed response, `[DONE]` as a string."""
    lines = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
    return [line if line == "[DONE]" else json.loads(line) for line in lines]


def test_a_routed_answer_and_what_the_engine_was_asked():
    engines = {n: FakeEngine(n) for n in NAMES}
    client = TestClient(api(engines))
    response = post(client, stop=["\n\n"], seed=-2**63, presence_penalty=0.5, frequency_penalty=-0.5,
                    logprobs=True, top_logprobs=2, stream=None, n=1.0, response_format={"type": "text"})
    assert response.status_code == 200 and response.headers["x-lookahead-candidate"] == "big"  # the best score
    request = engines["big"].requests[0]
    assert (request["stop"], request["seed"], request["presence_penalty"], request["frequency_penalty"]) == \
        (["\n\n"], -2**63, 0.5, -0.5)
    assert (request["logprobs"], request["top_logprobs"], request["response_format"]) == (True, 2, {"type": "text",
                                                                                                "json_schema": None})


@pytest.mark.parametrize("body,status,code", [
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required"}, 400,
     "unsupported_parameter"),
    ({"seed": 2**63}, 400, "invalid_value"),
    ({"max_tokens": 10**23}, 400, "invalid_value"),
    ({"max_tokens": 4096}, 400, "invalid_value"),  # over max_model_len (2048): refused before any engine
    ({"n": 2}, 400, "invalid_value"),
    ({"model": "m" * 1_000_000}, 400, "invalid_value"),
    ({"model": "gpt-17"}, 404, "model_not_found"),
])
def test_bad_requests_are_4xx_with_an_id_and_reach_no_engine(body, status, code):
    engines = {n: FakeEngine(n) for n in NAMES}
    response = post(TestClient(api(engines, max_body_bytes=3_000_000)), **body)
    error = response.json()["error"]
    assert (response.status_code, error["code"]) == (status, code)
    assert error["id"].startswith("err-") and len(response.content) < 2000  # never echoes a 1 MB name
    assert not any(e.requests for e in engines.values())


def test_body_size_message_count_and_prompt_size_limits():
    client = TestClient(api(max_body_bytes=10_000, max_messages=8, max_prompt_chars=100))
    big = client.post(URL, content=b'{"model": "lookahead", "messages": [' + b" " * 20_000 + b"]}",
                      headers={"content-type": "application/json"})
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"
    empties = post(client, messages=[{"role": "user", "content": ""}] * 9)
    assert empties.status_code == 400 and empties.json()["error"]["code"] == "too_many_messages"
    overhead = post(client, messages=[{"role": "user", "content": ""}] * 8 + [])  # 8 * 8 = 64: fits
    assert overhead.status_code == 200
    long = post(client, messages=[{"role": "user", "content": "x" * 40}] * 3)  # 3 * (40 + 8) > 100
    assert long.status_code == 400 and long.json()["error"]["code"] == "context_length_exceeded"


def test_a_hundred_thousand_empty_messages_are_refused():
    messages = [{"role": "user", "content": ""}] * 100_000  # 3.5 MB of JSON
    response = post(TestClient(api(max_body_bytes=10_000_000)), messages=messages)
    assert response.status_code == 400 and response.json()["error"]["code"] == "too_many_messages"
    assert post(TestClient(api()), messages=messages).status_code == 413  # the default body limit: 1 MB


def test_an_engine_client_error_is_a_400_and_not_a_fallback():
    engines = {"big": FakeEngine("big", "client"), "small": FakeEngine("small"), "mid": FakeEngine("mid")}
    response = post(TestClient(api(engines)))
    assert response.status_code == 400 and response.json()["error"]["code"] == "context_length_exceeded"
    assert len(engines["big"].requests) == 1 and not engines["small"].requests and not engines["mid"].requests


def test_an_error_body_from_an_engine_is_never_a_200():
    engines = {n: FakeEngine(n, "error_body") for n in NAMES}
    response = post(TestClient(api(engines)), model="big")
    assert response.status_code == 503 and "SECRET" not in response.text


def test_5xx_bodies_carry_an_id_and_no_exception_text():
    engines = {n: FakeEngine(n, "raise") for n in NAMES}
    response = post(TestClient(api(engines)))
    error = response.json()["error"]
    assert response.status_code == 503 and error["code"] == "candidates_unavailable" and error["id"].startswith("err-")
    assert "SECRET" not in response.text and "/internal/path" not in response.text
    assert all(len(e.requests) == 1 for e in engines.values())  # each tried once, in ranked order


def test_fallback_past_a_raising_candidate_names_it_without_its_error():
    engines = {"big": FakeEngine("big", "raise"), "small": FakeEngine("small"), "mid": FakeEngine("mid")}
    response = post(TestClient(api(engines)))
    assert response.status_code == 200 and response.headers["x-lookahead-fallback-from"] == "big"
    assert response.json()["model"] == "mid" and "SECRET" not in response.text  # ranked: big, mid, small


def test_a_slow_answer_is_a_504_and_is_not_generated_again_elsewhere():
    engines = {"big": FakeEngine("big", "hang"), "small": FakeEngine("small"), "mid": FakeEngine("mid")}
    response = post(TestClient(api(engines, candidate_timeout_s=0.3)))
    assert response.status_code == 504 and response.json()["error"]["code"] == "candidate_timeout"
    assert not engines["small"].requests and not engines["mid"].requests


def test_a_stream_that_goes_silent_ends_with_an_error_event():
    engines = {n: FakeEngine(n, "stall") for n in NAMES}
    response = post(TestClient(api(engines, stream_idle_timeout_s=0.3)), model="small", stream=True)
    payloads = events(response)
    assert response.status_code == 200 and payloads[0]["choices"][0]["delta"]["content"] == "forty-two"
    assert payloads[-2]["error"]["code"] == "stream_idle_timeout" and payloads[-2]["error"]["id"].startswith("err-")
    assert payloads[-1] == "[DONE]"


def test_a_stream_whose_first_chunk_is_a_client_error_is_a_400():
    engines = {n: FakeEngine(n, "client") for n in NAMES}
    response = post(TestClient(api(engines)), stream=True)
    assert response.status_code == 400 and response.json()["error"]["code"] == "context_length_exceeded"


def test_docs_and_schema_need_the_key_when_one_is_set():
    open_app = TestClient(api())
    assert open_app.get("/openapi.json").status_code == 200 and open_app.get("/docs").status_code == 200
    locked = TestClient(api(api_key="s3cret"))
    for path in ("/docs", "/redoc", "/openapi.json", "/v1/models"):
        assert locked.get(path).status_code == 401, path
        assert locked.get(path, headers={"authorization": "Bearer s3cret"}).status_code == 200, path
    assert locked.get("/health").status_code == 200  # for load balancers


@pytest.mark.parametrize("key", ["s3cret", "clé-secrète", "ключ-🔑", "Bearer-in-key"])
def test_any_utf8_key_matches_and_a_wrong_one_does_not(key):
    client = TestClient(api(api_key=key))
    right = {"authorization": b"Bearer " + key.encode("utf-8")}
    assert client.get("/v1/models", headers=right).status_code == 200
    assert post_with(client, right).status_code == 200
    wrong = {"authorization": b"Bearer " + (key + "x").encode("utf-8")}
    assert client.get("/v1/models", headers=wrong).status_code == 401
    latin1 = {"authorization": b"Bearer " + key.encode("utf-8").decode("latin-1").encode("utf-8")}
    assert key.isascii() or client.get("/v1/models", headers=latin1).status_code == 401


def post_with(client: TestClient, headers: dict):
    return client.post(URL, json={"model": "small", "messages": USER}, headers=headers)


def test_no_key_beyond_loopback_refuses_to_start_unless_allowed():
    for host in ("127.0.0.1", "::1", "localhost"):
        check_exposure(host, None, False)
    for host in ("0.0.0.0", "::", "10.0.0.5", "example.org"):
        with pytest.raises(ValueError, match="allow_unauthenticated"):
            check_exposure(host, None, False)
        check_exposure(host, "key", False)
        check_exposure(host, None, True)
    assert AppArgs().allow_unauthenticated is False


def test_unknown_routes_and_methods_are_openai_errors():
    client = TestClient(api())
    assert client.get("/v1/nope").json()["error"]["id"].startswith("err-")
    assert client.get(URL).status_code == 405
