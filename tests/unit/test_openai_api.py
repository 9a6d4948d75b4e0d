"""The OpenAI surface without Ray: body validation, the `model` naming, ranking, engine requests,
and the fallback loop with fake candidates."""

import asyncio
import json

import pytest
import torch

from lookahead_ray.config import CandidateSpec, SamplingConfig
from lookahead_ray.routers.base import route
from lookahead_ray.serving.app import AppArgs
from lookahead_ray.serving.ingress import engine_request, first_answer, rank
from lookahead_ray.serving.openai_api import (
    ChatCompletionBody,
    OpenAIError,
    Selection,
    engine_error,
    param_path,
    parse_chat_body,
    parse_model,
    plain_prompt,
    router_model,
)

NAMES = ["math", "code", "chat"]
USER = [{"role": "user", "content": "hi"}]


def body(**fields) -> bytes:
    return json.dumps({"model": "lookahead", "messages": USER, **fields}).encode()


def error_of(raw: bytes, limit: int = 100) -> OpenAIError:
    with pytest.raises(OpenAIError) as err:
        parse_chat_body(raw, limit)
    return err.value


def test_a_valid_body_and_its_defaults():
    parsed = parse_chat_body(body(messages=[{"role": "system", "content": "Be short."},
                                            {"role": "user", "content": [{"type": "text", "text": "a"},
                                                                         {"type": "text", "text": "b"}]}],
                                  temperature=0, seed=3, stream=None, n=1.0, user="u-1"), 100)
    assert parsed.last_user_text() == "ab" and parsed.stream is False and parsed.temperature == 0.0
    assert parsed.n == 1 and isinstance(parsed.n, int)  # OpenAI accepts stream: null and an integral n
    assert parsed.prompt_chars() == len("Be short.") + 2 + 2 * 8 and parsed.requested_max_tokens() is None
    assert parse_chat_body(body(max_tokens=5, max_completion_tokens=7), 100).requested_max_tokens() == 7


@pytest.mark.parametrize("raw,code,param", [
    (b"{not json", "invalid_json", None),
    (b"", "invalid_json", None),
    (b'"a string"', "invalid_body", None),
    (json.dumps({"messages": USER}).encode(), "missing_field", "model"),
    (json.dumps({"model": "lookahead"}).encode(), "missing_field", "messages"),
    (body(messages=[]), "invalid_value", "messages"),
    (body(messages=[{"role": "tool", "content": "x"}]), "invalid_value", "messages[0].role"),
    (body(messages=[{"role": "assistant", "content": "x"}]), "invalid_value", None),
    (body(messages=[{"role": "user", "content": None}]), "invalid_value", "messages[0].content"),
    (body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]), "invalid_value", None),
    (body(max_tokens="10"), "invalid_value", "max_tokens"),
    (body(max_tokens=True), "invalid_value", "max_tokens"),
    (body(max_tokens=0), "invalid_value", "max_tokens"),
    (body(stream="true"), "invalid_value", "stream"),
    (body(temperature=2.5), "invalid_value", "temperature"),
    (body(top_p=0), "invalid_value", "top_p"),
    (body(cost_weight=-0.1), "invalid_value", "cost_weight"),
    (body(n=3), "invalid_value", "n"),
    (body(model=""), "invalid_value", "model"),
    (body(messages=[{"role": "user", "content": "x" * 101}]), "context_length_exceeded", "messages"),
    (body(messages=[{"role": "user", "content": ""}] * 13), "context_length_exceeded", "messages"),  # 13 * 8 > 100
    (body(n=1.5), "invalid_value", "n"),
    (body(n=True), "invalid_value", "n"),
    (body(seed=2**63), "invalid_value", "seed"),
    (body(seed=-2**63 - 1), "invalid_value", "seed"),
    (body(max_tokens=2**31), "invalid_value", "max_tokens"),
    (body(max_tokens=1e23), "invalid_value", "max_tokens"),
    (body(temperature=-1e-300), "invalid_value", "temperature"),
    (b'{"model": "lookahead", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
     "invalid_value", "temperature"),
    (b'{"model": "lookahead", "messages": [{"role": "user", "content": "hi"}], "top_p": 1e400}',
     "invalid_value", "top_p"),
    (body(stop=["a", "b", "c", "d", "e"]), "invalid_value", "stop"),
    (body(stop=""), "invalid_value", "stop"),
    (body(top_logprobs=2), "invalid_value", None),  # needs logprobs: true
    (body(logprobs=True, top_logprobs=21), "invalid_value", "top_logprobs"),
    (body(presence_penalty=2.5), "invalid_value", "presence_penalty"),
    (body(frequency_penalty=-2.01), "invalid_value", "frequency_penalty"),
    (body(response_format={"type": "xml"}), "invalid_value", "response_format.type"),
    (body(response_format={"type": "json_schema"}), "invalid_value", "response_format"),
    (body(stream_options={"include_usage": True}), "invalid_value", None),  # needs stream: true
    (body(model="m" * 257), "invalid_value", "model"),
    (body(user="u" * 257), "invalid_value", "user"),
])
def test_every_bad_body_is_a_400(raw, code, param):
    err = error_of(raw)
    assert err.status == 400 and err.code == code and err.body()["error"]["type"] == "invalid_request_error"
    if param is not None:
        assert err.param == param and err.message.startswith(param) or code == "context_length_exceeded"


def test_model_naming():
    assert parse_model("lookahead", "lookahead_mlm", NAMES) == Selection(None, 0.0)
    assert parse_model("lookahead", "lookahead_mlm", NAMES, body_cost_weight=0.3) == Selection(None, 0.3)
    assert parse_model("lookahead", "lookahead_mlm", NAMES, default_cost_weight=0.2) == Selection(None, 0.2)
    assert parse_model("router-lookahead_mlm-0.5", "lookahead_mlm", NAMES) == Selection(None, 0.5)
    assert parse_model("router-lookahead_mlm-1", "lookahead_mlm", NAMES) == Selection(None, 1.0)
    assert parse_model("code", "lookahead_mlm", NAMES) == Selection("code", None)
    assert router_model("lookahead_mlm", 0) == "router-lookahead_mlm-0.0"


@pytest.mark.parametrize("model,cost_weight,status,code", [
    ("gpt-4", None, 404, "model_not_found"),
    ("router-mlc-0.5", None, 404, "model_not_found"),
    ("router-lookahead_mlm-1.01", None, 400, "invalid_cost_weight"),
    ("router-lookahead_mlm--0.5", None, 400, "invalid_cost_weight"),
    ("router-lookahead_mlm-nan", None, 400, "invalid_cost_weight"),
    ("router-lookahead_mlm-x", None, 400, "invalid_cost_weight"),
    ("router-lookahead_mlm-0.5", 0.5, 400, "invalid_value"),
    ("code", 0.5, 400, "invalid_value"),
])
def test_bad_models(model, cost_weight, status, code):
    with pytest.raises(OpenAIError) as err:
        parse_model(model, "lookahead_mlm", NAMES, body_cost_weight=cost_weight)
    assert (err.value.status, err.value.code) == (status, code)


@pytest.mark.parametrize("field", ["tools", "tool_choice", "logit_bias", "functions", "parallel_tool_calls",
                                   "audio", "modalities", "prediction", "unknown_field"])
def test_a_field_that_is_not_honoured_is_a_400_naming_it(field):
    err = error_of(body(**{field: "x"}))
    assert (err.status, err.code, err.param) == (400, "unsupported_parameter", field)
    assert err.message.startswith(field)


def test_unsupported_nested_fields_are_400s_too():
    assert error_of(body(messages=[{"role": "user", "content": "hi", "name": "bob"}])).param == "messages[0].name"
    assert error_of(body(stream=True, stream_options={"include_obfuscation": True})).param == \
        "stream_options.include_obfuscation"
    assert error_of(body(messages=[{"role": "assistant", "content": None, "tool_calls": []},
                                   {"role": "user", "content": "hi"}])).status == 400


def test_the_fields_that_are_honoured_parse():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    parsed = parse_chat_body(body(stop="END", logprobs=True, top_logprobs=3, presence_penalty=-2, frequency_penalty=2.0,
                                  seed=-2**63, response_format={"type": "json_schema",
                                                                "json_schema": {"name": "x", "schema": schema}}), 100)
    assert parsed.stop_sequences() == ["END"] and parsed.top_logprobs == 3 and parsed.seed == -2**63
    assert parsed.response_format.model_dump(by_alias=True)["json_schema"]["schema"] == schema


def test_too_many_messages_is_a_400_before_the_prompt_size():
    err = error_of(body(messages=[{"role": "user", "content": ""}] * 300), limit=10**9)
    assert (err.status, err.code, err.param) == (400, "too_many_messages", "messages")


def test_an_error_never_echoes_a_huge_name():
    err = error_of(body(**{"k" * 100_000: 1}))
    assert err.status == 400 and len(err.body()["error"]["message"]) <= 500
    with pytest.raises(OpenAIError) as nf:
        parse_model("m" * 200, "lookahead_mlm", NAMES)
    assert nf.value.status == 404 and "m" * 65 not in nf.value.message and "200 characters" in nf.value.message


def test_param_path():
    assert param_path(("messages", 0, "role")) == "messages[0].role"
    assert param_path(("messages", 1, "content", "str")) == "messages[1].content"
    assert param_path(()) == ""


@pytest.mark.parametrize("scores,costs,weight", [
    ([0.2, 0.9, 0.5], [1.0, 1.0, 1.0], 0.0),
    ([0.9, 0.8, 0.1], [10.0, 1.0, 5.0], 0.5),
    ([0.5, 0.5, 0.5], [3.0, 2.0, 1.0], 0.0),  # a tie goes to the lower index
    ([0.3, 0.6, 0.61], [0.0, 1.0, 1.0], 1.0),
])
def test_rank_starts_with_the_shared_route_pick(scores, costs, weight):
    order = rank(scores, costs, weight)
    assert sorted(order) == [0, 1, 2]
    assert order[0] == route(torch.tensor([scores]), costs, weight).item()


def test_rank_by_hand():
    # adjusted = [0.9 - 0.5 * 1, 0.8 - 0, 0.1 - 0.5 * 4/9] = [0.4, 0.8, -0.122]
    assert rank([0.9, 0.8, 0.1], [10.0, 1.0, 5.0], 0.5) == [1, 0, 2]


def test_engine_request_applies_the_candidate():
    spec = CandidateSpec(name="c", model="m", system_prompt="You are terse.", chat_template=False,
                         sampling=SamplingConfig(temperature=0.7, top_p=0.9, max_tokens=96, seed=4))
    parsed = ChatCompletionBody.model_validate_json(body(
        messages=[{"role": "developer", "content": "Answer in French."}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Salut"}, {"role": "user", "content": "Ça va?"}],
        top_p=0.5, stream=True, stream_options={"include_usage": True}))
    request = engine_request(spec, parsed)
    assert request["messages"] == [{"role": "system", "content": "You are terse.\n\nAnswer in French."},
                                   {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Salut"},
                                   {"role": "user", "content": "Ça va?"}]
    assert (request["max_tokens"], request["temperature"], request["top_p"], request["seed"]) == (96, 0.7, 0.5, 4)
    assert request["stream"] and request["include_usage"] and not request["chat_template"]
    assert plain_prompt(request["messages"][:2]) == "You are terse.\n\nAnswer in French.\n\nHi"


def test_app_args_reject_unknown_keys_and_bad_values():
    assert AppArgs().pool == "configs/pool-cpu.yaml"
    with pytest.raises(ValueError):
        AppArgs(pool_file="x.yaml")
    with pytest.raises(ValueError):
        AppArgs(default_cost_weight=1.5)


# ---------------------------------------------------------------------------------------------
# The fallback loop
# ---------------------------------------------------------------------------------------------


class Fake:
    """Candidates that answer, raise, hang or report a client error; records who was called."""

    def __init__(self, behaviour: dict[str, str]):
        self.behaviour, self.called, self.cancelled = behaviour, [], []

    def __call__(self, name: str):
        self.called.append(name)

        async def answer():
            kind = self.behaviour[name]
            if kind == "raise":
                raise RuntimeError(f"{name} exploded\nValueError: the last line")
            if kind == "hang":
                await asyncio.sleep(10)
            if kind == "client":
                return engine_error(400, "prompt too long", code="context_length_exceeded")
            return {"answer": name}

        return answer(), lambda: self.cancelled.append(name)


def run(fake: Fake, order: list[str], timeout: float = 0.2):
    return asyncio.run(first_answer(order, fake, timeout))


def test_the_first_candidate_answers():
    fake = Fake({"a": "ok", "b": "ok"})
    attempt = run(fake, ["a", "b"])
    assert (attempt.candidate, attempt.result, attempt.failed, fake.called) == ("a", {"answer": "a"}, [], ["a"])


def test_fallback_past_a_raise_without_its_text():
    fake = Fake({"a": "raise", "b": "ok"})
    attempt = run(fake, ["a", "b"])
    assert attempt.candidate == "b" and fake.called == ["a", "b"] and fake.cancelled == ["a"]
    assert attempt.failed[0]["candidate"] == "a" and attempt.failed[0]["error"].startswith("failed (error id err-")
    assert "exploded" not in str(attempt.failed)  # the exception text goes to the log only


def test_a_timeout_is_a_504_and_no_other_candidate_regenerates_the_answer():
    fake = Fake({"a": "hang", "b": "ok"})
    with pytest.raises(OpenAIError) as err:
        run(fake, ["a", "b"])
    assert (err.value.status, err.value.code) == (504, "candidate_timeout")
    assert fake.called == ["a"] and fake.cancelled == ["a"]


def test_a_client_error_is_not_retried_elsewhere():
    fake = Fake({"a": "client", "b": "ok"})
    with pytest.raises(OpenAIError) as err:
        run(fake, ["a", "b"])
    assert err.value.status == 400 and err.value.code == "context_length_exceeded" and fake.called == ["a"]


def test_none_answering_is_a_503():
    with pytest.raises(OpenAIError) as err:
        run(Fake({"a": "raise", "b": "raise"}), ["a", "b"])
    assert err.value.status == 503 and err.value.type == "server_error" and "a: failed (error id" in err.value.message
    assert "exploded" not in err.value.message and "last line" not in err.value.message


def test_openai_error_survives_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(OpenAIError(404, "nope", param="model", code="model_not_found")))
    assert (err.status, err.message, err.param, err.code) == (404, "nope", "model", "model_not_found")
