"""The OpenAI-compatible ingress: auth, limits, routing, fallback, and the HTTP app around them.

```
HTTP -> build_api(gateway) (FastAPI) -> Gateway --score(prompt)--> LookaheadRouter
                                                --complete/stream(request)--> engine-<model>
```

`Gateway` holds the logic and talks to its router and engines through DeploymentHandle-shaped
objects (`.method.remote(...)` returns an awaitable with `.cancel()`), so tests drive the same HTTP
app in process with fakes. `LookaheadIngress` is the Serve deployment: a Gateway whose ASGI app is
built on each replica (`serve.ingress()` with `__serve_build_asgi_app__`).

It fails closed:
- a body field this server would not honour is a 400 naming it (openai_api.ChatCompletionBody);
- the body size, the message count, the prompt size and the model name each have a 4xx limit;
- an engine's client error (`engine_error`) is a 4xx, never a fallback and never a 200;
- a candidate that has not answered within `candidate_timeout_s` is a 504: an answer that started
  is not generated again elsewhere (two timeouts in a row would double the load the timeout
  signals); only a candidate that raises falls back to the next-ranked one;
- a stream that sends no chunk for `stream_idle_timeout_s` ends with an error event;
- every error body carries an id and a short message; exception text goes to the log, under the id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from lookahead_ray.config import CandidateSpec, PoolConfig
from lookahead_ray.routers.base import route
from lookahead_ray.serving.auth import check_exposure, http_host, key_matches
from lookahead_ray.serving.openai_api import (
    ROUTER_MODEL,
    SSE_DONE,
    ChatCompletionBody,
    OpenAIError,
    chat_chunk,
    error_id,
    model_list,
    parse_chat_body,
    parse_model,
    router_model,
    router_name,
    sse,
)

log = logging.getLogger("ray.serve")

CANDIDATE_HEADER = "x-lookahead-candidate"
FALLBACK_HEADER = "x-lookahead-fallback-from"


@dataclass(frozen=True)
class IngressSettings:
    """Everything the ingress needs besides its handles (built once, by `app.build_app`)."""

    pool: PoolConfig
    engine_of: dict[str, str]
    """candidate -> its engine deployment's name."""
    router_kind: str
    router_source: str
    api_key: str | None = None
    allow_unauthenticated: bool = False
    default_cost_weight: float = 0.0
    listed_cost_weights: tuple[float, ...] = (0.0, 0.5, 1.0)
    max_prompt_chars: int = 16000
    max_messages: int = 256
    max_body_bytes: int = 1_000_000
    max_model_len: int = 2048
    candidate_timeout_s: float = 120.0
    stream_idle_timeout_s: float = 60.0
    fallback: bool = True
    router_timeout_s: float = 30.0

    @property
    def router_name(self) -> str:
        return router_name(self.router_kind)

    def model_ids(self) -> list[str]:
        routers = [ROUTER_MODEL] + [router_model(self.router_name, w) for w in self.listed_cost_weights]
        return routers + list(self.pool.names)


# ---------------------------------------------------------------------------------------------
# Routing: the ranking behind fallback
# ---------------------------------------------------------------------------------------------


def rank(scores: Sequence[float], costs: Sequence[float], cost_weight: float) -> list[int]:
    """Candidate indices, best first: `routers.base.route`'s pick, then its pick among the rest, ...

    >>> rank([0.2, 0.9, 0.5], [1.0, 1.0, 1.0], 0.5)
    [1, 2, 0]
    >>> rank([0.9, 0.8], [10.0, 1.0], 0.5)
    [1, 0]
    """
    quality = torch.tensor([list(scores)], dtype=torch.float32)  # (1, T)
    order: list[int] = []
    for _ in range(quality.shape[1]):
        pick = int(route(quality, costs, cost_weight)[0])
        order.append(pick)
        quality[0, pick] = float("-inf")  # taken: route() picks the best of the others next
    return order


def candidate_cost(spec: CandidateSpec) -> float:
    """The cost the knob trades against: price per 1k input plus per 1k output tokens."""
    return spec.cost_per_1k_input + spec.cost_per_1k_output


def engine_request(spec: CandidateSpec, body: ChatCompletionBody) -> dict[str, Any]:
    """What an engine runs for `spec` on `body`: the candidate's system prompt first (the body's own
    system/developer messages appended to it), the candidate's decoding unless the body sets a field.

    >>> spec = CandidateSpec(name="c", model="m", system_prompt="Be brief.")
    >>> body = ChatCompletionBody(model="c", messages=[{"role": "user", "content": "Hi"}], max_tokens=8)
    >>> r = engine_request(spec, body)
    >>> r["messages"], r["max_tokens"], r["temperature"], r["stop"]
    ([{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'}], 8, 0.0, [])
    """
    system = [spec.system_prompt] if spec.system_prompt else []
    system += [m.text() for m in body.messages if m.role in ("system", "developer")]
    messages = [{"role": "system", "content": "\n\n".join(system)}] if system else []
    messages += [{"role": m.role, "content": m.text()} for m in body.messages if m.role in ("user", "assistant")]
    sampling = spec.sampling
    return {
        "messages": messages,
        "chat_template": spec.chat_template,
        "max_tokens": body.requested_max_tokens() or sampling.max_tokens,
        "temperature": sampling.temperature if body.temperature is None else body.temperature,
        "top_p": sampling.top_p if body.top_p is None else body.top_p,
        "seed": sampling.seed if body.seed is None else body.seed,
        "stop": body.stop_sequences(),
        "logprobs": bool(body.logprobs),
        "top_logprobs": body.top_logprobs,
        "presence_penalty": body.presence_penalty or 0.0,
        "frequency_penalty": body.frequency_penalty or 0.0,
        "response_format": None if body.response_format is None else body.response_format.model_dump(by_alias=True),
        "stream": body.stream,
        "include_usage": bool(body.stream_options and body.stream_options.include_usage),
    }


# ---------------------------------------------------------------------------------------------
# Fallback: try candidates in ranked order
# ---------------------------------------------------------------------------------------------


@dataclass
class Attempt:
    """The answer of the first candidate that answered, and who failed before it."""

    candidate: str
    result: Any
    failed: list[dict[str, str]]


def client_error(result: Any) -> OpenAIError | None:
    """An engine's answer that is an error body: a 4xx to answer as is, or None for a real answer.

    An error body with a server status (or none) raises: it is a failure, never a 200."""
    if not (isinstance(result, dict) and "error" in result):
        return None
    error = result["error"] if isinstance(result["error"], dict) else {}
    status = result.get("status")
    if isinstance(status, int) and 400 <= status < 500:
        return OpenAIError(status, str(error.get("message") or "the candidate refused the request"),
                           error.get("type") or "invalid_request_error", error.get("param"), error.get("code"))
    raise RuntimeError(f"the engine answered an error body: {str(error.get('message'))[:300]}")


async def first_answer(order: Sequence[str], call: Callable[[str], tuple[Awaitable[Any], Callable[[], None]]],
                       timeout_s: float) -> Attempt:
    """Call `order[0]`, then the next one while a call raises.

    `call(name)` returns (awaitable, cancel). A client error dict (`openai_api.engine_error`) is
    raised as its 4xx; a call past `timeout_s` is cancelled and answered 504, with no other
    candidate tried. None answered: a 503.
    """
    failed: list[dict[str, str]] = []
    for name in order:
        awaitable, cancel = call(name)
        try:
            result = await asyncio.wait_for(_awaited(awaitable), timeout_s)
            if (error := client_error(result)) is not None:
                raise error
        except OpenAIError:
            raise
        except asyncio.TimeoutError:
            cancel()
            raise OpenAIError(504, f"candidate {name} did not answer within {timeout_s:g} s", type="server_error",
                              code="candidate_timeout") from None
        except StopAsyncIteration:
            failed.append({"candidate": name, "error": "the stream ended before its first chunk"})
            continue
        except Exception as err:  # a replica error, a dead actor, an engine exception
            cancel()
            eid = error_id()
            log.warning("candidate %s failed [%s]: %s", name, eid, short_error(err))
            failed.append({"candidate": name, "error": f"failed (error id {eid})"})
            continue
        return Attempt(name, result, failed)
    raise OpenAIError(503, "no candidate could answer; the server log has each failure under its error id ("
                           + ", ".join(f"{f['candidate']}: {f['error']}" for f in failed) + ")",
                      type="server_error", code="candidates_unavailable")


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def short_error(err: BaseException) -> str:
    """The last line of an exception (a RayTaskError's first line is a whole traceback header): for the log."""
    text = str(err).strip().splitlines()
    return (text[-1] if text else type(err).__name__)[:300]


# ---------------------------------------------------------------------------------------------
# The gateway
# ---------------------------------------------------------------------------------------------


class Gateway:
    """The OpenAI API over a router and engines: /v1/chat/completions (routed, direct, streamed),
    /v1/models, /health, and the docs (behind the key when one is set)."""

    def __init__(self, settings: IngressSettings, router: Any, engines: dict[str, Any]):
        self.settings = settings
        self.router = router
        self.engines = engines
        self.costs = [candidate_cost(spec) for spec in settings.pool.candidates]

    def check_auth(self, request: Request) -> None:
        if not key_matches(self.settings.api_key, request.scope["headers"]):
            raise OpenAIError(401, "missing or wrong API key: send `Authorization: Bearer <key>`",
                              code="invalid_api_key")

    async def read_body(self, request: Request) -> bytes:
        """The body, refused with a 413 as soon as it passes max_body_bytes (never read whole first)."""
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise OpenAIError(413, f"the body is over this server's limit of {limit} bytes", code="body_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise OpenAIError(413, f"the body is over this server's limit of {limit} bytes", code="body_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    def parse(self, raw: bytes) -> ChatCompletionBody:
        s = self.settings
        body = parse_chat_body(raw, s.max_prompt_chars, s.max_messages)
        wanted = body.requested_max_tokens()
        if wanted is not None and wanted > s.max_model_len:
            raise OpenAIError(400, f"max_tokens: {wanted} is over the engines' context of {s.max_model_len} tokens",
                              param="max_tokens", code="invalid_value")
        return body

    async def chat_completions(self, request: Request):
        self.check_auth(request)
        body = self.parse(await self.read_body(request))
        order, info = await self.plan(body)
        if body.stream:
            return await self.stream(body, order, info)
        result, headers = await self.complete(body, order, info)
        return JSONResponse(result, headers=headers)

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed chat completion through a DeploymentHandle: the HTTP body as a dict -> the
        response body. Bad input raises OpenAIError, as over HTTP."""
        parsed = self.parse(json.dumps(body).encode())
        if parsed.stream:
            raise OpenAIError(400, "a DeploymentHandle call is not streamed; use HTTP for stream=true", param="stream")
        result, _ = await self.complete(parsed, *await self.plan(parsed))
        return result

    async def plan(self, body: ChatCompletionBody) -> tuple[list[str], dict[str, Any]]:
        """The candidates to try, in order, and the routing summary (router, scores, ranking)."""
        s = self.settings
        selection = parse_model(body.model, s.router_name, s.pool.names, body.cost_weight, s.default_cost_weight)
        info: dict[str, Any] = {"router": None, "cost_weight": None, "scores": None, "ranking": None,
                                "routing_ms": None, "router_error": None}
        if selection.candidate is not None:
            return [selection.candidate], info
        start = time.perf_counter()
        response = self.router.score.remote(body.last_user_text())
        try:
            scores = await asyncio.wait_for(_awaited(response), s.router_timeout_s)  # (T,) probabilities
        except Exception as err:  # the router is down or slow: serve anyway, cheapest first
            response.cancel()
            if isinstance(err, asyncio.TimeoutError):
                reason = f"no scores within {s.router_timeout_s:g} s"
            else:
                reason = f"the router failed (error id {error_id()})"
                log.warning("router failed, ranking by cost [%s]: %s", reason, short_error(err))
            ranking = [s.pool.names[i] for i in rank([0.0] * len(self.costs), self.costs, 1.0)]
            info.update(ranking=ranking, router_error=reason)
            return (ranking if s.fallback else ranking[:1]), info
        ranking = [s.pool.names[i] for i in rank(scores, self.costs, selection.cost_weight)]
        info.update(router=s.router_name, cost_weight=selection.cost_weight,
                    scores=dict(zip(s.pool.names, [round(p, 6) for p in scores])), ranking=ranking,
                    routing_ms=round((time.perf_counter() - start) * 1000, 3))
        return (ranking if s.fallback else ranking[:1]), info

    def headers(self, attempt: Attempt) -> dict[str, str]:
        headers = {CANDIDATE_HEADER: attempt.candidate}
        if attempt.failed:
            headers[FALLBACK_HEADER] = ",".join(f["candidate"] for f in attempt.failed)
        return headers

    def summary(self, info: dict[str, Any], attempt: Attempt) -> dict[str, Any]:
        """The `lookahead` field of a response: who answered, the router's scores, any fallback."""
        return {"candidate": attempt.candidate, **info, "fallback": bool(attempt.failed), "failed": attempt.failed}

    def handle_for(self, name: str) -> Any:
        return self.engines[self.settings.engine_of[name]]

    async def complete(self, body: ChatCompletionBody, order: list[str],
                       info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        def call(name: str):
            response = self.handle_for(name).complete.remote(engine_request(self.settings.pool.get(name), body))
            return response, response.cancel

        attempt = await first_answer(order, call, self.settings.candidate_timeout_s)
        result = dict(attempt.result, model=attempt.candidate, lookahead=self.summary(info, attempt))
        return result, self.headers(attempt)

    async def stream(self, body: ChatCompletionBody, order: list[str], info: dict[str, Any]) -> StreamingResponse:
        streams = {}

        def call(name: str):
            stream = self.handle_for(name).options(stream=True).stream.remote(
                engine_request(self.settings.pool.get(name), body))
            streams[name] = stream
            return stream.__anext__(), stream.cancel

        attempt = await first_answer(order, call, self.settings.candidate_timeout_s)
        first = dict(attempt.result, model=attempt.candidate, lookahead=self.summary(info, attempt))
        return StreamingResponse(self.events(attempt.candidate, first, streams[attempt.candidate]),
                                 media_type="text/event-stream", headers=self.headers(attempt))

    async def events(self, candidate: str, first: dict[str, Any], rest: Any) -> AsyncIterator[str]:
        """The SSE lines of a stream whose first chunk arrived; after it there is no falling back, so
        a failure, an error chunk or a pause over stream_idle_timeout_s ends it with an error event."""
        idle = self.settings.stream_idle_timeout_s
        yield sse(first)
        done = False
        try:
            while True:
                chunk = await asyncio.wait_for(_awaited(rest.__anext__()), idle)
                if (error := client_error(chunk)) is not None:
                    yield sse(error.body(error_id()))
                    break
                yield sse(dict(chunk, model=candidate))
        except StopAsyncIteration:
            done = True
        except asyncio.TimeoutError:
            eid = error_id()
            log.warning("candidate %s sent no chunk within %g s [%s]", candidate, idle, eid)
            yield sse(OpenAIError(504, f"candidate {candidate} sent nothing for {idle:g} s", type="server_error",
                                  code="stream_idle_timeout").body(eid))
        except Exception as err:
            eid = error_id()
            log.warning("candidate %s failed mid-stream [%s]: %s", candidate, eid, short_error(err))
            yield sse(OpenAIError(502, f"candidate {candidate} failed mid-stream", type="server_error").body(eid))
        finally:
            if not done:
                rest.cancel()  # the client left, or the stream failed: stop the engine's generation
        yield SSE_DONE


# ---------------------------------------------------------------------------------------------
# The HTTP app
# ---------------------------------------------------------------------------------------------


def error_response(err: OpenAIError) -> JSONResponse:
    """An error body with its id; a 5xx is logged under the id (a 4xx is the client's to read)."""
    eid = error_id()
    if err.status >= 500:
        log.warning("answered %d [%s]: %s", err.status, eid, err.message)
    return JSONResponse(err.body(eid), status_code=err.status)


def build_api(gateway: Gateway) -> FastAPI:
    """The FastAPI app of one gateway. FastAPI's own docs routes are off: ours ask for the key."""
    api = FastAPI(title="lookahead-ray", description="Response-aware LLM routing, OpenAI-compatible",
                  docs_url=None, redoc_url=None, openapi_url=None)

    @api.exception_handler(OpenAIError)
    async def _openai_error(request: Request, err: OpenAIError) -> JSONResponse:
        return error_response(err)

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return error_response(OpenAIError(err.status_code, str(err.detail)[:200]))

    @api.exception_handler(RequestValidationError)
    async def _request_error(request: Request, err: RequestValidationError) -> JSONResponse:
        return error_response(OpenAIError(400, "the request does not match this route", code="invalid_request"))

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        eid = error_id()
        log.exception("unexpected error in the ingress [%s]", eid)
        return JSONResponse(OpenAIError(500, "internal error", type="server_error").body(eid), status_code=500)

    @api.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        gateway.check_auth(request)
        return model_list(gateway.settings.model_ids())

    @api.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await gateway.chat_completions(request)

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        gateway.check_auth(request)
        return JSONResponse(api.openapi())

    @api.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        gateway.check_auth(request)
        return get_swagger_ui_html(openapi_url="/openapi.json", title="lookahead-ray")

    @api.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        gateway.check_auth(request)
        return get_redoc_html(openapi_url="/openapi.json", title="lookahead-ray")

    return api


@serve.deployment(name="LookaheadIngress", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256)
@serve.ingress()
class LookaheadIngress(Gateway):
    """The Gateway as the app's Serve ingress; `chat(body)` answers DeploymentHandle calls."""

    def __init__(self, settings: IngressSettings, router: Any, engines: dict[str, Any]):
        # again on the replica: a Serve config can change http_options.host after build_app ran
        check_exposure(http_host(), settings.api_key, settings.allow_unauthenticated)
        super().__init__(settings, router, engines)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_api(self)
