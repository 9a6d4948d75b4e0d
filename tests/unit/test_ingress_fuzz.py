"""Fuzz the OpenAI app with Hypothesis (issue 15 part 6): wrong types, boundary numbers, huge and deep
JSON, unicode, invalid UTF-8, missing and unknown fields, odd headers and paths. No request may get a
5xx, and a 200 is always an answer, never an error body.

The app is the real ingress HTTP app (`ingress.build_api`) over fake router and engines, in process,
so thousands of requests take seconds; the examples are derandomized, so a run is reproducible.
"""

from __future__ import annotations

import json
import math

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serve_fakes import NAMES, api

URL = "/v1/chat/completions"
MIN_REQUESTS = 2000
FIELDS = ["model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature",
          "top_p", "seed", "n", "stop", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty",
          "response_format", "cost_weight", "user"]
MODELS = ["lookahead", "router-lookahead_mlm-0.5", "router-lookahead_mlm-1e-300", "router-lookahead_mlm-nan",
          "router-lookahead_mlm-inf", "router-mlc-0.5", *NAMES, "", "é" * 300]
BOUNDARY_NUMBERS = [0, 1, -1, 2, 20, 21, 2**31 - 1, 2**31, 2**63 - 1, 2**63, -2**63, -2**63 - 1, 10**23, 10**400,
                    0.0, -0.0, 1.0, 1.5, 2.0, 2.0000001, 1e-300, 5e-324, 1e308, -1e308, math.inf, -math.inf, math.nan]
SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))

json_scalars = st.one_of(st.none(), st.booleans(), st.sampled_from(BOUNDARY_NUMBERS), st.integers(),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)), max_leaves=20)
messages = st.lists(st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "", "USER"]),
                           "content": st.one_of(st.text(max_size=200), json_values,
                                                st.lists(st.fixed_dictionaries({"type": st.sampled_from(
                                                    ["text", "image_url"]), "text": st.text(max_size=20)}),
                                                    max_size=3))},
                          optional={"name": json_values, "tool_calls": json_values}),
    json_values), max_size=6)


class Counter:
    def __init__(self, client: TestClient):
        self.client, self.requests, self.statuses = client, 0, {}

    def send(self, method: str, path: str, content: bytes = b"", headers: dict | None = None):
        response = self.client.request(method, path, content=content, headers=headers or {})
        self.requests += 1
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, (path, content[:300], response.status_code, response.text[:300])
        if response.status_code == 200 and path == URL:
            if response.headers["content-type"].startswith("text/event-stream"):
                assert response.text.rstrip().endswith("data: [DONE]")
            else:
                assert "choices" in response.json() and "error" not in response.json()
        return response

    def post(self, body: bytes, headers: dict | None = None):
        return self.send("POST", URL, body, {"content-type": "application/json", **(headers or {})})


def dumps(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def test_no_generated_request_gets_a_5xx():
    # a small body limit keeps the huge bodies quick; max_messages keeps pydantic's work bounded
    counter = Counter(TestClient(api(max_body_bytes=200_000, max_prompt_chars=4000, max_messages=64)))

    @settings(SETTINGS, max_examples=700)
    @given(st.fixed_dictionaries({}, optional={field: json_values for field in FIELDS}), messages,
           st.sampled_from(MODELS), st.booleans())
    def mutated_fields(body, msgs, model, keep_model):
        body.setdefault("messages", msgs)
        if keep_model:
            body["model"] = model
        counter.post(dumps(body))

    @SETTINGS
    @given(st.sampled_from(FIELDS), st.sampled_from(BOUNDARY_NUMBERS + [None, True, "1", [], {}, "x" * 300]),
           st.sampled_from(MODELS[:5]), st.booleans())
    def one_field_at_a_boundary(field, value, model, stream):
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream, field: value}
        counter.post(dumps(body))

    @SETTINGS
    @given(json_values)
    def any_json(value):
        counter.post(dumps(value))

    @SETTINGS
    @given(st.binary(max_size=300))
    def any_bytes(raw):  # invalid UTF-8, truncated JSON, control bytes
        counter.post(raw)

    @SETTINGS
    @given(st.dictionaries(st.text(min_size=1, max_size=30), json_values, min_size=1, max_size=4))
    def unknown_fields(extra):
        counter.post(dumps({"model": "lookahead", "messages": [{"role": "user", "content": "hi"}], **extra}))

    @settings(SETTINGS, max_examples=150)
    @given(st.sampled_from(["list", "dict", "content", "stop"]), st.integers(1, 20_000))
    def deep_json(kind, depth):
        nested = "[" * depth + "]" * depth if kind != "dict" else '{"a":' * depth + "1" + "}" * depth
        if kind == "content":
            nested = '{"model": "lookahead", "messages": [{"role": "user", "content": ' + nested + "}]}"
        elif kind == "stop":
            nested = '{"model": "lookahead", "messages": [{"role": "user", "content": "hi"}], "stop": ' + nested + "}"
        counter.post(nested.encode())

    @settings(SETTINGS, max_examples=100)
    @given(st.sampled_from([0, 1, 4000, 199_000, 200_001, 1_000_000]), st.sampled_from(["content", "model", "key"]),
           st.characters(codec="utf-8"))
    def huge(size, where, char):
        text = char * size
        body = {"model": "lookahead", "messages": [{"role": "user", "content": "hi"}]}
        if where == "content":
            body["messages"][0]["content"] = text
        elif where == "model":
            body["model"] = text
        else:
            body[text or "k"] = 1
        counter.post(dumps(body))

    @settings(SETTINGS, max_examples=200)
    @given(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
           st.sampled_from(["/v1/chat/completions", "/v1/models", "/health", "/docs", "/redoc", "/openapi.json",
                            "/v1/completions", "/v1/", "/", "/v1/chat/completions/x", "/%ff", "/v1/models/../x"]),
           st.dictionaries(st.sampled_from(["content-type", "content-length", "authorization", "accept",
                                            "transfer-encoding"]),
                           st.sampled_from(["application/json", "text/plain", "", "0", "99999999999", "-1",
                                            "Bearer x", "chunked", "\u00e9"]), max_size=3),
           st.binary(max_size=50))
    def methods_paths_headers(method, path, headers, raw):
        if "content-length" in headers or "transfer-encoding" in headers:
            return  # h11 itself refuses a body that contradicts them, before any app code
        counter.send(method, path, raw, {k: v.encode("utf-8") for k, v in headers.items()})

    for check in (mutated_fields, one_field_at_a_boundary, any_json, any_bytes, unknown_fields, deep_json, huge,
                  methods_paths_headers):
        check()
    print(f"fuzz: {counter.requests} requests, by status {dict(sorted(counter.statuses.items()))}")  # pytest -s
    assert counter.requests >= MIN_REQUESTS, counter.requests
    assert counter.statuses.get(200, 0) > 0 and counter.statuses.get(400, 0) > 0, counter.statuses
