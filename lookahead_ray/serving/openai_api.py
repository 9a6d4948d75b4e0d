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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ROUTER_MODEL = "lookahead"
ROUTER_PREFIX = "router-"
_ROUTER_NAME = re.compile(r"^router-(?P<router>[A-Za-z0-9_]+)-(?P<weight>.+)$")
ROLES = ("system", "developer", "user", "assistant")
SSE_DONE = "data: [DONE]\n\n"


class OpenAIError(Exception):
    """An error answered as `{"error": {"message", "type", "param", "code"}}` with an HTTP status."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def __reduce__(self):  # crosses process boundaries (a DeploymentHandle call) intact
        return type(self), (self.status, self.message, self.type, self.param, self.code)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# ---------------------------------------------------------------------------------------------
# The request
# ---------------------------------------------------------------------------------------------


class TextPart(BaseModel):
    """One part of a list-valued `content`; only text parts are served."""

    model_config = ConfigDict(strict=True, extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    include_usage: bool = False


class ChatCompletionBody(BaseModel):
    """The fields of an OpenAI chat completion that are served; other fields are ignored.

    Types are strict (JSON types, no coercion of "10" to 10). `cost_weight` is an extension: the
    cost knob of the `lookahead` model.
    """

    model_config = ConfigDict(strict=True, extra="ignore")
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1)
    cost_weight: float | None = Field(default=None, ge=0.0, le=1.0)
    user: str | None = None

    @model_validator(mode="after")
    def _has_user_message(self) -> "ChatCompletionBody":
        if not any(m.role == "user" for m in self.messages):
            raise ValueError("messages must contain at least one message with role 'user'")
        return self

    def last_user_text(self) -> str:
        """What the router reads: the last user message (the training prompts are single user turns)."""
        return next(m.text() for m in reversed(self.messages) if m.role == "user")

    def prompt_chars(self) -> int:
        return sum(len(m.text()) for m in self.messages)

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


def parse_chat_body(raw: bytes, max_prompt_chars: int) -> ChatCompletionBody:
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
    if body.prompt_chars() > max_prompt_chars:
        raise OpenAIError(400, f"the messages hold {body.prompt_chars()} characters; this server accepts at most "
                               f"{max_prompt_chars}", param="messages", code="context_length_exceeded")
    return body


def validation_error(err: ValidationError) -> OpenAIError:
    """The first problem of a pydantic ValidationError as a 400, `param` in OpenAI's `a[0].b` form."""
    first = err.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return OpenAIError(400, f"the body is not valid JSON: {first['msg']}", code="invalid_json")
    if first["type"] == "model_type" and not first["loc"]:
        return OpenAIError(400, "the body must be a JSON object", code="invalid_body")
    param = param_path(first["loc"])
    message = first["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if first["type"] == "missing":
        message = "field required"
    return OpenAIError(400, f"{param}: {message}" if param else message, param=param or None,
                       code="missing_field" if first["type"] == "missing" else "invalid_value")


def param_path(loc: Sequence[Any]) -> str:
    """('messages', 0, 'role') -> 'messages[0].role'; pydantic's union-branch names are dropped."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "list[TextPart]") or "[" in str(part):
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
                                   f"'{ROUTER_PREFIX}{router}-<w>'), not to the candidate {model!r}",
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
            raise OpenAIError(400, f"model {model!r}: cost weight {match['weight']!r} is not a number",
                              param="model", code="invalid_cost_weight") from None
        if not 0.0 <= weight <= 1.0:  # also rejects nan
            raise OpenAIError(400, f"model {model!r}: cost weight must be in [0, 1], got {match['weight']}",
                              param="model", code="invalid_cost_weight")
        if body_cost_weight is not None:
            raise OpenAIError(400, f"model {model!r} names its cost weight; do not also send cost_weight",
                              param="cost_weight", code="invalid_value")
        return Selection(candidate=None, cost_weight=weight)
    served = [ROUTER_MODEL, f"{ROUTER_PREFIX}{router}-<cost_weight in [0, 1]>", *candidates]
    raise OpenAIError(404, f"the model {model!r} does not exist; served: {', '.join(served)}", param="model",
                      code="model_not_found")


# ---------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def chat_completion(id: str, model: str, text: str, finish_reason: str, prompt_tokens: int,
                    completion_tokens: int) -> dict[str, Any]:
    """A non-streamed `chat.completion` body."""
    return {
        "id": id, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
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


def engine_error(status: int, message: str, type: str = "invalid_request_error", code: str | None = None) -> dict:
    """How an engine reports a client error (e.g. a prompt over its context) instead of raising:
    the ingress answers it with `status` and does not fall back."""
    return {"error": {"message": message, "type": type, "param": None, "code": code}, "status": status}
