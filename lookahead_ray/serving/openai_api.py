"""The OpenAI-compatible surface of the Serve app: the request body, its validation into OpenAI-style
4xx errors, the `model` naming, and the response, chunk and model-list bodies. No Ray, no vLLM inside.

The `model` field of a chat completion selects the routing:

- `lookahead`: the router's choice, at the body's `cost_weight` (an extension field) or the app's
  default;
- `router-<router>-<cost_weight>` (RouteLLM-style, e.g. `router-lookahead_mlm-0.5`): the router's
  choice at that cost weight in [0, 1]; `<router>` is the served router's kind with `_` for `-`
  (`mlc`, `lookahead_mlm`, `lookahead_clm`);
- a candidate's name: that candidate, no routing.

>>> parse_model("router-lookahead_mlm-0.5", "lookahead_mlm", ["a", "b"])
Selection(candidate=None, cost_weight=0.5)
>>> parse_model("b", "lookahead_mlm", ["a", "b"])
Selection(candidate='b', cost_weight=None)
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ROUTER_MODEL = "lookahead"
ROUTER_PREFIX = "router-"
_ROUTER_NAME = re.compile(r"^router-(?P<router>[A-Za-z0-9_]+)-(?P<weight>.+)$")
ROLES = ("system", "developer", "user", "assistant")
SSE_DONE = "data: [DONE]\n\n"


class OpenAIError(Exception):
    """An error answered as `{"error": {"message", "type", "param", "code"}}` with an HTTP status.

    `message` is what the client reads: short, and never an exception's text (that goes to the log,
    under the error's id, which the ingress adds to the body).
    """

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def __reduce__(self):  # crosses process boundaries (a DeploymentHandle call) intact
        return type(self), (self.status, self.message, self.type, self.param, self.code)

    def body(self, error_id: str | None = None) -> dict[str, Any]:
        error = {"message": self.message[:MAX_MESSAGE_CHARS], "type": self.type, "param": self.param,
                 "code": self.code}
        if error_id is not None:
            error["id"] = error_id
        return {"error": error}


def error_id() -> str:
    """The id an error body and its log line share, so a client's report finds the details."""
    return f"err-{uuid.uuid4().hex[:16]}"


def shown(value: str, limit: int = 64) -> str:
    """A client's string quoted in an error message, cut to `limit` characters (never echo a 1 MB name).

    >>> shown("x" * 100, 4)
    "'xxxx'... (100 characters)"
    """
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


# ---------------------------------------------------------------------------------------------
# The request
# ---------------------------------------------------------------------------------------------

# OpenAI's bounds, where its API reference states one; the others are this server's limits.
INT64 = 2**63
MAX_TOKENS = 2**31 - 1  # an int32: anything larger is a typo, and no engine context comes close
MAX_STOP = 4  # OpenAI: "up to 4 sequences"
MAX_STOP_CHARS = 256
MAX_TOP_LOGPROBS = 20
MAX_MODEL_CHARS = 256
MAX_USER_CHARS = 256
MAX_MESSAGE_CHARS = 500  # of an error message
MESSAGE_OVERHEAD_CHARS = 8
"""What one message costs the prompt besides its text (a chat template's role markers, about 4 to
8 tokens): without it, 100,000 empty messages would count as an empty prompt."""


class Strict(BaseModel):
    """Strict JSON types (no "10" for 10), no NaN or infinity, and unknown fields are errors: a field
    this server would not honour gets a 400 that names it, never a 200 that ignored it."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class TextPart(Strict):
    """One part of a list-valued `content`; only text parts are served."""

    type: Literal["text"]
    text: str


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class StreamOptions(Strict):
    include_usage: bool = False


class JSONSchemaFormat(Strict):
    """`response_format.json_schema`: the schema vLLM's guided decoding follows."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    json_schema: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_iff_json_schema(self) -> "ResponseFormat":
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is required with type 'json_schema', and only with it")
        return self


def _null_is_false(value: Any) -> Any:
    return False if value is None else value


def _integral_n(value: Any) -> Any:
    """OpenAI accepts `n: null` and `n: 1.0`; a non-integral float or a bool stays an error."""
    if value is None:
        return 1
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class ChatCompletionBody(Strict):
    """The fields of an OpenAI chat completion that are served; any other field is a 400.

    Each field is validated with OpenAI's bounds and then honoured by every engine, or refused by
    the engine that cannot honour it with a 400 (`logprobs` on a transformers stream, a JSON
    `response_format` on transformers). `cost_weight` is an extension: the cost knob of the
    `lookahead` model.
    """

    model: str = Field(min_length=1, max_length=MAX_MODEL_CHARS)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=-INT64, le=INT64 - 1)  # vLLM's bound (torch.long)
    n: int = Field(default=1, ge=1, le=1)
    stop: str | list[str] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    response_format: ResponseFormat | None = None
    cost_weight: float | None = Field(default=None, ge=0.0, le=1.0)
    user: str | None = Field(default=None, max_length=MAX_USER_CHARS)
    """An end-user id for abuse monitoring: it changes no answer, so accepting it drops nothing."""

    _stream_null = field_validator("stream", mode="before")(_null_is_false)
    _n_integral = field_validator("n", mode="before")(_integral_n)

    @field_validator("stop")
    @classmethod
    def _bounded_stop(cls, stop: str | list[str] | None) -> str | list[str] | None:
        sequences = [stop] if isinstance(stop, str) else stop or []
        if len(sequences) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        if any(not s or len(s) > MAX_STOP_CHARS for s in sequences):
            raise ValueError(f"each stop sequence needs 1 to {MAX_STOP_CHARS} characters")
        return stop

    @model_validator(mode="after")
    def _has_user_message(self) -> "ChatCompletionBody":
        if not any(m.role == "user" for m in self.messages):
            raise ValueError("messages must contain at least one message with role 'user'")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options needs stream: true")
        return self

    def last_user_text(self) -> str:
        """What the router reads: the last user message (the training prompts are single user turns)."""
        return next(m.text() for m in reversed(self.messages) if m.role == "user")

    def prompt_chars(self) -> int:
        """Every message's text plus MESSAGE_OVERHEAD_CHARS for each message."""
        return sum(len(m.text()) + MESSAGE_OVERHEAD_CHARS for m in self.messages)

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def stop_sequences(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


def parse_chat_body(raw: bytes, max_prompt_chars: int, max_messages: int = 256) -> ChatCompletionBody:
    """Validate a raw request body; every problem is an OpenAIError with status 400.

    >>> parse_chat_body(b'{"model": "lookahead", "messages": []}', 100)
    Traceback (most recent call last):
    ...
    lookahead_ray.serving.openai_api.OpenAIError: messages: List should have at least 1 item after validation, not 0
    """
    try:
        body = ChatCompletionBody.model_validate_json(raw)
    except ValidationError as err:
        raise validation_error(err) from None
    if len(body.messages) > max_messages:
        raise OpenAIError(400, f"messages: {len(body.messages)} messages; this server accepts at most {max_messages}",
                          param="messages", code="too_many_messages")
    if body.prompt_chars() > max_prompt_chars:
        raise OpenAIError(400, f"the messages hold {body.prompt_chars()} characters ({MESSAGE_OVERHEAD_CHARS} per "
                               f"message included); this server accepts at most {max_prompt_chars}",
                          param="messages", code="context_length_exceeded")
    return body


def validation_error(err: ValidationError) -> OpenAIError:
    """The first problem of a pydantic ValidationError as a 400, `param` in OpenAI's `a[0].b` form.

    pydantic's message is kept (it names the rule, never the input); its URL is not.
    """
    first = err.errors(include_url=False, include_input=False, include_context=False)[0]
    if first["type"] == "json_invalid":
        return OpenAIError(400, f"the body is not valid JSON: {first['msg']}", code="invalid_json")
    if first["type"] == "model_type" and not first["loc"]:
        return OpenAIError(400, "the body must be a JSON object", code="invalid_body")
    param = param_path(first["loc"])
    message = first["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    code = "invalid_value"
    if first["type"] == "missing":
        message, code = "field required", "missing_field"
    elif first["type"] == "extra_forbidden":
        message, code = "this server does not support the field", "unsupported_parameter"
    return OpenAIError(400, f"{shown(param) if len(param) > 64 else param}: {message}" if param else message,
                       param=(param[:MAX_MODEL_CHARS] or None), code=code)


def param_path(loc: Sequence[Any]) -> str:
    """('messages', 0, 'role') -> 'messages[0].role'; pydantic's union-branch names are dropped."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "list[TextPart]", "list[str]") or "[" in str(part):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


# ---------------------------------------------------------------------------------------------
# The `model` field
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """What a request's `model` asks for: one candidate directly, or the router at a cost weight."""

    candidate: str | None
    cost_weight: float | None


def router_name(kind: str) -> str:
    """The `<router>` of `router-<router>-<cost_weight>`: the router's kind with `_` for `-`.

    >>> router_name("lookahead-mlm")
    'lookahead_mlm'
    """
    return kind.replace("-", "_")


def router_model(name: str, cost_weight: float) -> str:
    """The RouteLLM-style model name of the router at one cost weight.

    >>> router_model("lookahead_mlm", 0.5)
    'router-lookahead_mlm-0.5'
    """
    return f"{ROUTER_PREFIX}{name}-{float(cost_weight)}"


def parse_model(model: str, router: str, candidates: Sequence[str], body_cost_weight: float | None = None,
                default_cost_weight: float = 0.0) -> Selection:
    """The routing a `model` value selects (see the module docstring). Unknown model: 404; a bad
    cost weight: 400."""
    if model in candidates:
        if body_cost_weight is not None:
            raise OpenAIError(400, f"cost_weight applies to routed models ({ROUTER_MODEL!r}, "
                                   f"'{ROUTER_PREFIX}{router}-<w>'), not to the candidate {shown(model)}",
                              param="cost_weight", code="invalid_value")
        return Selection(candidate=model, cost_weight=None)
    if model == ROUTER_MODEL:
        weight = default_cost_weight if body_cost_weight is None else body_cost_weight
        return Selection(candidate=None, cost_weight=weight)
    match = _ROUTER_NAME.match(model)
    if match and match["router"] == router:
        try:
            weight = float(match["weight"])
        except ValueError:
            raise OpenAIError(400, f"model {shown(model)}: the cost weight is not a number",
                              param="model", code="invalid_cost_weight") from None
        if not 0.0 <= weight <= 1.0:  # also rejects nan
            raise OpenAIError(400, f"model {shown(model)}: the cost weight must be in [0, 1]",
                              param="model", code="invalid_cost_weight")
        if body_cost_weight is not None:
            raise OpenAIError(400, f"model {shown(model)} names its cost weight; do not also send cost_weight",
                              param="cost_weight", code="invalid_value")
        return Selection(candidate=None, cost_weight=weight)
    served = [ROUTER_MODEL, f"{ROUTER_PREFIX}{router}-<cost_weight in [0, 1]>", *candidates]
    raise OpenAIError(404, f"the model {shown(model)} does not exist; served: {', '.join(served)}", param="model",
                      code="model_not_found")


# ---------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def chat_completion(id: str, model: str, text: str, finish_reason: str, prompt_tokens: int,
                    completion_tokens: int, logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A non-streamed `chat.completion` body; `logprobs` is the `content` list of OpenAI's logprobs."""
    return {
        "id": id, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "logprobs": None if logprobs is None else {"content": logprobs},
                     "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def chat_chunk(id: str, model: str, delta: dict[str, Any] | None, finish_reason: str | None = None,
               usage: dict[str, int] | None = None) -> dict[str, Any]:
    """One `chat.completion.chunk`; `delta=None` gives the usage-only chunk (no choices)."""
    chunk: dict[str, Any] = {"id": id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                             "choices": [] if delta is None else
                             [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def sse(payload: dict[str, Any]) -> str:
    """One server-sent event line of a stream."""
    return f"data: {json.dumps(payload)}\n\n"


def model_list(ids: Sequence[str], owned_by: str = "lookahead-ray") -> dict[str, Any]:
    created = int(time.time())
    return {"object": "list", "data": [{"id": i, "object": "model", "created": created, "owned_by": owned_by}
                                       for i in ids]}


def plain_prompt(messages: Sequence[dict[str, str]]) -> str:
    """The text a candidate with `chat_template: false` reads: the message contents, blank-line separated
    (for one system and one user message, what generation feeds it: `f"{system}\\n\\n{prompt}"`)."""
    return "\n\n".join(m["content"] for m in messages)


def engine_error(status: int, message: str, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None) -> dict:
    """How an engine reports a client error (e.g. a prompt over its context) instead of raising:
    the ingress answers it with `status` and does not fall back."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}, "status": status}
