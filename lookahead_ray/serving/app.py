"""The Ray Serve application: one OpenAI-compatible app made of three kinds of deployments.

```
HTTP -> LookaheadIngress (FastAPI)  --score(prompt)-->  LookaheadRouter (@serve.batch, RouterPredictor)
              |
              +--complete/stream(request)-->  engine-<model> (ray.serve.llm LLMServer on vLLM, or HFEngine)
```

`build_app(AppArgs(...))` returns the Application; `serve run deployments:app` calls `app_builder`
with the `args` of a Serve config (or none: the CPU defaults). Candidates that share a model and an
engine share one engine deployment: the ingress applies each candidate's system prompt and decoding
per request. Replicas, autoscaling and resources of each deployment come from the Serve config's
`deployments:` section (deployments/config.yaml, deployments/gpu.yaml); the code sets small defaults
for a 2-core machine.
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.util
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Literal, Sequence

import numpy as np

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from lookahead_ray.config import CandidateSpec, PoolConfig, from_dict, load_pool
from lookahead_ray.serving.openai_api import (
    ROUTER_MODEL,
    ROUTER_PREFIX,
    SSE_DONE,
    ChatCompletionBody,
    OpenAIError,
    chat_chunk,
    chat_completion,
    completion_id,
    engine_error,
    model_list,
    parse_chat_body,
    parse_model,
    plain_prompt,
    router_model,
    router_name,
    sse,
)

log = logging.getLogger("ray.serve")

REPO = Path(__file__).resolve().parents[2]
DEFAULT_POOL = "configs/pool-cpu.yaml"
DEFAULT_ROUTER = "models:/lookahead-router/latest"
ROUTER_ENV = "LOOKAHEAD_ROUTER"
API_KEY_ENV = "LOOKAHEAD_API_KEY"
CANDIDATE_HEADER = "x-lookahead-candidate"
FALLBACK_HEADER = "x-lookahead-fallback-from"


class AppArgs(BaseModel):
    """The typed arguments of the app (the `args:` of a Serve config application). Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    pool: str | dict[str, Any] = DEFAULT_POOL
    """A pool YAML (relative paths: from the working directory, else from the repo) or an inline
    `{candidates: [...]}` mapping."""
    router: str | None = None
    """A checkpoint folder or `models:/<name>/<version|latest>`; None: $LOOKAHEAD_ROUTER, else
    models:/lookahead-router/latest. `latest` is the newest version registered for this pool."""
    tracking_uri: str | None = None
    """MLflow store of `models:/` routers; None: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db."""
    engine: Literal["auto", "vllm", "hf"] = "auto"
    """auto: each candidate's engine, transformers where vllm is not installed; vllm | hf: all candidates."""
    default_cost_weight: float = Field(default=0.0, ge=0.0, le=1.0)
    """The cost weight of model `lookahead` when the body sends no `cost_weight`."""
    listed_cost_weights: tuple[float, ...] = (0.0, 0.5, 1.0)
    """Which `router-<router>-<w>` names GET /v1/models lists (any w in [0, 1] is served)."""
    api_key: str | None = None
    """Bearer token of /v1/*; None: $LOOKAHEAD_API_KEY; unset or empty: no auth."""
    max_prompt_chars: int = Field(default=16000, ge=1)
    """Longer messages (all contents together) get a 400 before any candidate sees them."""
    candidate_timeout_s: float = Field(default=120.0, gt=0)
    """A candidate that has not answered (non-streamed) or sent its first chunk (streamed) within
    this many seconds counts as failed: the next-ranked candidate answers."""
    fallback: bool = True
    """Try the next-ranked candidate when the chosen one errors or times out."""
    router_timeout_s: float = Field(default=30.0, gt=0)
    """A router that fails or takes longer: the request goes to the cheapest candidates first (the
    ranking by cost alone) and `lookahead.router_error` says why."""
    router_max_batch_size: int = Field(default=32, ge=1)
    """@serve.batch: prompts scored in one forward pass (1: unbatched)."""
    router_batch_wait_timeout_s: float = Field(default=0.005, ge=0)
    router_threads: int | None = None
    """torch threads of the router replica; None: Ray's default for the replica."""
    router_precision: Literal["float32", "bfloat16"] = "float32"
    """The router's weights and forward: float32, or bfloat16 (for a router replica on a GPU)."""
    max_model_len: int = Field(default=2048, ge=16)
    """Context length of the engines (prompt + answer)."""
    dtype: str = "auto"
    """Model dtype of the engines: auto | float32 | bfloat16 | float16."""
    gpu_memory_utilization: float | None = None
    """vLLM memory share; None: 0.1 on CPU (a share of RAM there), 0.9 on a GPU."""
    enforce_eager: bool | None = None
    """vLLM without graph capture / compilation; None: on CPU only."""
    hf_threads: int | None = None
    """torch threads of a transformers engine replica; None: Ray's default."""


# ---------------------------------------------------------------------------------------------
# Routing: the ranking behind fallback
# ---------------------------------------------------------------------------------------------


def rank(scores: Sequence[float], costs: Sequence[float], cost_weight: float) -> list[int]:
    """Candidate indices, best first, by quality - cost_weight * min-max normalised cost.

    The first index is `routers.base.route`'s pick (same arithmetic, ties to the lower index); the
    rest is the fallback order.

    >>> rank([0.2, 0.9, 0.5], [1.0, 1.0, 1.0], 0.5)
    [1, 2, 0]
    >>> rank([0.9, 0.8], [10.0, 1.0], 0.5)
    [1, 0]
    """
    quality = np.asarray(scores, dtype=np.float32)  # (T,) float32 as in route(), so ties break alike
    cost = np.asarray(costs, dtype=np.float32)  # (T,)
    spread = cost.max() - cost.min()
    normalised = (cost - cost.min()) / spread if spread > 0 else np.zeros_like(cost)
    adjusted = quality - np.float32(cost_weight) * normalised  # (T,)
    return np.argsort(-adjusted, kind="stable").tolist()


def candidate_cost(spec: CandidateSpec) -> float:
    """The cost the knob trades against: price per 1k input plus per 1k output tokens."""
    return spec.cost_per_1k_input + spec.cost_per_1k_output


def engine_request(spec: CandidateSpec, body: ChatCompletionBody) -> dict[str, Any]:
    """What an engine runs for `spec` on `body`: the candidate's system prompt first (the body's own
    system/developer messages appended to it), the candidate's decoding unless the body sets a field.

    >>> spec = CandidateSpec(name="c", model="m", system_prompt="Be brief.")
    >>> body = ChatCompletionBody(model="c", messages=[{"role": "user", "content": "Hi"}], max_tokens=8)
    >>> r = engine_request(spec, body)
    >>> r["messages"], r["max_tokens"], r["temperature"]
    ([{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'}], 8, 0.0)
    """
    system = [spec.system_prompt] if spec.system_prompt else []
    system += [m.text() for m in body.messages if m.role in ("system", "developer")]
    messages = [{"role": "system", "content": "\n\n".join(system)}] if system else []
    messages += [{"role": m.role, "content": m.text()} for m in body.messages if m.role in ("user", "assistant")]
    sampling = spec.sampling
    max_tokens = body.requested_max_tokens() or sampling.max_tokens
    return {
        "messages": messages,
        "chat_template": spec.chat_template,
        "max_tokens": max_tokens,
        "temperature": sampling.temperature if body.temperature is None else body.temperature,
        "top_p": sampling.top_p if body.top_p is None else body.top_p,
        "seed": sampling.seed if body.seed is None else body.seed,
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


async def first_answer(order: Sequence[str], call: Callable[[str], tuple[Awaitable[Any], Callable[[], None]]],
                       timeout_s: float) -> Attempt:
    """Call `order[0]`, then the next one while a call raises or times out.

    `call(name)` returns (awaitable, cancel): the awaitable's result, or a client error dict
    (`openai_api.engine_error`, raised here as a 4xx without trying further), ends the loop. None
    answered: a 503.
    """
    failed: list[dict[str, str]] = []
    for name in order:
        awaitable, cancel = call(name)
        try:
            result = await asyncio.wait_for(_awaited(awaitable), timeout_s)
        except asyncio.TimeoutError:
            cancel()
            failed.append({"candidate": name, "error": f"no answer within {timeout_s:g} s"})
            continue
        except StopAsyncIteration:
            failed.append({"candidate": name, "error": "the stream ended before its first chunk"})
            continue
        except Exception as err:  # a replica error, a dead actor, an engine exception
            cancel()
            failed.append({"candidate": name, "error": short_error(err)})
            log.warning("candidate %s failed: %s", name, short_error(err))
            continue
        if isinstance(result, dict) and "error" in result and "status" in result:
            error = result["error"]
            raise OpenAIError(result["status"], error["message"], error.get("type") or "invalid_request_error",
                              error.get("param"), error.get("code"))
        return Attempt(name, result, failed)
    tried = "; ".join(f"{f['candidate']}: {f['error']}" for f in failed)
    raise OpenAIError(503, f"no candidate could answer ({tried})", type="server_error", code="candidates_unavailable")


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def short_error(err: BaseException) -> str:
    """The last line of an exception (a RayTaskError's first line is a whole traceback header)."""
    text = str(err).strip().splitlines()
    return (text[-1] if text else type(err).__name__)[:300]


# ---------------------------------------------------------------------------------------------
# Deployments
# ---------------------------------------------------------------------------------------------


@serve.deployment(name="LookaheadRouter", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
class LookaheadRouter:
    """Scores prompts with a trained router: `score(prompt) -> [p_1..p_T]`, sigmoid of its logits.

    Concurrent calls are grouped by @serve.batch into one forward pass (max_batch_size 1: unbatched).
    """

    def __init__(self, source: str, tracking_uri: str | None = None, max_batch_size: int = 32,
                 batch_wait_timeout_s: float = 0.005, threads: int | None = None, precision: str = "float32"):
        import torch

        from lookahead_ray.serving.predictor import RouterPredictor

        if tracking_uri:
            os.environ["MLFLOW_TRACKING_URI"] = tracking_uri  # resolve_checkpoint reads it for models:/ URIs
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.predictor = RouterPredictor.load(source, batch_size=max_batch_size, precision=precision)
        self.predictor.score({"prompt": ["warm-up"]})  # the first forward is slow: not on a user's request
        self.score.set_max_batch_size(max_batch_size)
        self.score.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.batches = self.requests = 0

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def score(self, prompts: list[str]) -> list[list[float]]:
        logits = await asyncio.to_thread(self.predictor.score, {"prompt": prompts})  # (B, T)
        self.batches += 1
        self.requests += len(prompts)
        return self.torch.sigmoid(logits).tolist()

    def candidates(self) -> list[str]:
        return list(self.predictor.candidates)

    def stats(self) -> dict[str, int]:
        """Batches run and prompts scored since start (mean batch size = requests / batches)."""
        return {"batches": self.batches, "requests": self.requests, "torch_threads": self.torch.get_num_threads()}


@serve.deployment(name="HFEngine", ray_actor_options={"num_cpus": 1}, max_ongoing_requests=32,
                  health_check_period_s=10)
class HFEngine:
    """A transformers engine for candidates that share one model: `complete(request) -> dict` and
    `stream(request)` (chunk dicts). One generation at a time per replica."""

    def __init__(self, model_path: str, dtype: str = "auto", threads: int | None = None, max_model_len: int = 2048,
                 name: str = "hf"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.torch, self.name, self.max_model_len = torch, name, max_model_len
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype).eval()
        ids = self.model.generation_config.eos_token_id
        ids = self.tokenizer.eos_token_id if ids is None else ids
        self.eos = sorted({int(i) for i in (ids if isinstance(ids, list) else [ids]) if i is not None})
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos[0]
        self.lock = asyncio.Lock()

    def check_health(self) -> None:
        pass  # the replica answers: healthy

    def prompt_ids(self, request: dict[str, Any]) -> list[int]:
        if not request["chat_template"]:
            return list(self.tokenizer(plain_prompt(request["messages"])).input_ids)
        if not self.tokenizer.chat_template:
            raise ValueError(f"{self.name}: the candidate wants a chat template but the tokenizer has none")
        text = self.tokenizer.apply_chat_template(request["messages"], tokenize=False, add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def too_long(self, ids: list[int], request: dict[str, Any]) -> dict | None:
        if len(ids) + request["max_tokens"] <= self.max_model_len:
            return None
        return engine_error(400, f"the prompt has {len(ids)} tokens and max_tokens is {request['max_tokens']}: "
                                 f"more than this candidate's context of {self.max_model_len} tokens",
                            code="context_length_exceeded")

    def generate(self, ids: list[int], request: dict[str, Any], streamer=None, stop: threading.Event | None = None):
        """The new token ids (greedy when temperature is 0, else seeded sampling)."""
        from transformers import StoppingCriteria, StoppingCriteriaList

        torch = self.torch

        class Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return stop is not None and stop.is_set()

        greedy = request["temperature"] == 0
        kwargs = {"do_sample": False} if greedy else {
            "do_sample": True, "temperature": request["temperature"], "top_p": request["top_p"], "top_k": 0}
        if not greedy:
            torch.manual_seed(request["seed"])
        input_ids = torch.tensor([ids])  # (1, L)
        with torch.no_grad():
            out = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                      max_new_tokens=request["max_tokens"], pad_token_id=self.pad,
                                      eos_token_id=self.eos, streamer=streamer,
                                      stopping_criteria=StoppingCriteriaList([Stop()]), **kwargs)
        new = out[0, len(ids):].tolist()  # (<= max_tokens,)
        while new and new[-1] == self.pad and self.pad not in self.eos:
            new.pop()
        return new

    def finish(self, new: list[int], request: dict[str, Any]) -> tuple[list[int], str]:
        if new and new[-1] in self.eos:
            return new[:-1], "stop"
        return new, "length" if len(new) >= request["max_tokens"] else "stop"

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        ids = self.prompt_ids(request)
        if error := self.too_long(ids, request):
            return error
        async with self.lock:
            new = await asyncio.to_thread(self.generate, ids, request)
        tokens, reason = self.finish(new, request)
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return chat_completion(completion_id(), self.name, text, reason, len(ids), len(tokens))

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        from transformers import TextIteratorStreamer

        ids = self.prompt_ids(request)
        if error := self.too_long(ids, request):
            yield error
            return
        cid = completion_id()
        async with self.lock:
            streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
            stop, outcome = threading.Event(), {}

            def run() -> None:
                try:
                    outcome["new"] = self.generate(ids, request, streamer, stop)
                except BaseException as err:  # surfaces in the stream below
                    outcome["error"] = err
                    streamer.end()

            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            pieces = iter(streamer)
            first = True
            try:
                while (piece := await asyncio.to_thread(next, pieces, None)) is not None:
                    if not piece:
                        continue
                    delta = {"role": "assistant", "content": piece} if first else {"content": piece}
                    first = False
                    yield chat_chunk(cid, self.name, delta)
                await asyncio.to_thread(thread.join)
            finally:
                stop.set()  # a cancelled stream (client gone) stops generating at the next token
        if "error" in outcome:
            raise outcome["error"]
        tokens, reason = self.finish(outcome["new"], request)
        yield chat_chunk(cid, self.name, {"role": "assistant", "content": ""} if first else {}, reason)
        if request["include_usage"]:
            usage = {"prompt_tokens": len(ids), "completion_tokens": len(tokens),
                     "total_tokens": len(ids) + len(tokens)}
            yield chat_chunk(cid, self.name, None, usage=usage)


@dataclass(frozen=True)
class IngressSettings:
    """Everything the ingress needs besides its handles (built once, by `build_app`)."""

    pool: PoolConfig
    engine_of: dict[str, str]
    """candidate -> its engine deployment's name."""
    router_kind: str
    router_source: str
    api_key: str | None = None
    default_cost_weight: float = 0.0
    listed_cost_weights: tuple[float, ...] = (0.0, 0.5, 1.0)
    max_prompt_chars: int = 16000
    candidate_timeout_s: float = 120.0
    fallback: bool = True
    router_timeout_s: float = 30.0

    @property
    def router_name(self) -> str:
        return router_name(self.router_kind)

    def model_ids(self) -> list[str]:
        routers = [ROUTER_MODEL] + [router_model(self.router_name, w) for w in self.listed_cost_weights]
        return routers + list(self.pool.names)


api = FastAPI(title="lookahead-ray", description="Response-aware LLM routing, OpenAI-compatible")


@api.exception_handler(OpenAIError)
async def _openai_error(request: Request, err: OpenAIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
    return JSONResponse(OpenAIError(err.status_code, str(err.detail)).body(), status_code=err.status_code)


@api.exception_handler(RequestValidationError)
async def _request_error(request: Request, err: RequestValidationError) -> JSONResponse:
    return JSONResponse(OpenAIError(400, str(err.errors()[:1])).body(), status_code=400)


@api.exception_handler(Exception)
async def _unexpected(request: Request, err: Exception) -> JSONResponse:
    log.exception("unexpected error in the ingress")
    body = OpenAIError(500, f"internal error: {short_error(err)}", type="server_error").body()
    return JSONResponse(body, status_code=500)


@serve.deployment(name="LookaheadIngress", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256)
@serve.ingress(api)
class LookaheadIngress:
    """The OpenAI API: /v1/chat/completions (routed, direct, streamed), /v1/models, /health."""

    def __init__(self, settings: IngressSettings, router: DeploymentHandle, engines: dict[str, DeploymentHandle]):
        self.settings = settings
        self.router = router
        self.engines = engines
        self.costs = [candidate_cost(spec) for spec in settings.pool.candidates]

    def check_auth(self, request: Request) -> None:
        key = self.settings.api_key
        if not key:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise OpenAIError(401, "missing or wrong API key: send `Authorization: Bearer <key>`",
                              code="invalid_api_key")

    @api.get("/health")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/v1/models")
    async def models(self, request: Request) -> dict[str, Any]:
        self.check_auth(request)
        return model_list(self.settings.model_ids())

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        self.check_auth(request)
        body = parse_chat_body(await request.body(), self.settings.max_prompt_chars)
        order, info = await self.plan(body)
        if body.stream:
            return await self.stream(body, order, info)
        result, headers = await self.complete(body, order, info)
        return JSONResponse(result, headers=headers)

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed chat completion through a DeploymentHandle: the HTTP body as a dict -> the
        response body. Bad input raises OpenAIError, as over HTTP."""
        parsed = parse_chat_body(json.dumps(body).encode(), self.settings.max_prompt_chars)
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
            reason = f"no scores within {s.router_timeout_s:g} s" if isinstance(err, asyncio.TimeoutError) \
                else short_error(err)
            log.warning("router failed, ranking by cost: %s", reason)
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

    def handle_for(self, name: str) -> DeploymentHandle:
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
        rest = streams[attempt.candidate]
        summary = self.summary(info, attempt)

        async def events() -> AsyncIterator[str]:
            yield sse(dict(attempt.result, model=attempt.candidate, lookahead=summary))
            try:
                async for chunk in rest:
                    yield sse(dict(chunk, model=attempt.candidate))
            except Exception as err:  # after the first chunk there is no falling back: say so in the stream
                log.warning("candidate %s failed mid-stream: %s", attempt.candidate, short_error(err))
                yield sse(OpenAIError(502, f"candidate {attempt.candidate} failed mid-stream: {short_error(err)}",
                                      type="server_error").body())
            yield SSE_DONE

        return StreamingResponse(events(), media_type="text/event-stream", headers=self.headers(attempt))


# ---------------------------------------------------------------------------------------------
# The builder
# ---------------------------------------------------------------------------------------------


def resolve_path(path: str, what: str) -> Path:
    """An existing file or folder: absolute, or relative to the working directory, else to the repo."""
    for candidate in (Path(path), Path.cwd() / path, REPO / path):
        if candidate.exists():
            return candidate.resolve()
    raise FileNotFoundError(f"{what} {path!r} not found (looked in {Path.cwd()} and {REPO})")


def load_app_pool(pool: str | dict[str, Any]) -> PoolConfig:
    if isinstance(pool, dict):
        if not isinstance(pool.get("candidates"), list):
            raise ValueError("args.pool: an inline pool needs a 'candidates' list")
        specs = tuple(from_dict(CandidateSpec, c, f"args.pool.candidates[{i}]")
                      for i, c in enumerate(pool["candidates"]))
        return PoolConfig(specs)
    return load_pool(resolve_path(pool, "pool"))


def check_names(pool: PoolConfig) -> None:
    for name in pool.names:
        if name == ROUTER_MODEL or name.startswith(ROUTER_PREFIX):
            raise ValueError(f"candidate name {name!r} collides with the router models "
                             f"({ROUTER_MODEL!r}, '{ROUTER_PREFIX}...'); rename it")


def resolve_router(source: str, pool: PoolConfig, tracking_uri: str) -> tuple[str, str]:
    """(a source every replica can load, the router's kind), after checking that the router was
    trained for exactly this pool: the same names in the same order (the order of its scores)."""
    if source.startswith("models:/"):
        name, _, version = source[len("models:/"):].partition("/")
        if not name or not version:
            raise ValueError(f"router {source!r}: expected models:/<name>/<version|latest>")
        import mlflow

        client = mlflow.MlflowClient(tracking_uri)
        try:
            versions = client.search_model_versions(f"name='{name}'")
        except Exception as err:
            raise ValueError(f"router {source!r}: cannot read the registry at {tracking_uri}: {err}") from err
        if not versions:
            raise ValueError(f"router {source!r}: no model {name!r} is registered in {tracking_uri}; run `make demo` "
                             f"(it trains and registers one), or set {ROUTER_ENV} / args.router to a checkpoint folder")
        by_version = sorted(versions, key=lambda v: int(v.version), reverse=True)
        pool_names = list(pool.names)
        if version == "latest":
            fitting = [v for v in by_version if json.loads(v.tags.get("candidates", "null") or "null") == pool_names]
            if not fitting:
                seen = sorted({v.tags.get("candidates", "?") for v in by_version})
                raise ValueError(f"router {source!r}: no version of {name!r} was trained for the pool {pool_names} "
                                 f"(names and order); registered pools: {seen}")
            chosen = fitting[0]
        else:
            chosen = next((v for v in by_version if v.version == version), None)
            if chosen is None:
                raise ValueError(f"router {source!r}: {name!r} has no version {version}")
            trained_for = json.loads(chosen.tags.get("candidates", "null") or "null")
            if trained_for != pool_names:
                raise ValueError(f"router {source!r} was trained for candidates {trained_for}, but the pool has "
                                 f"{pool_names}: names and order must match")
        kind = chosen.tags.get("router") or "router"
        return f"models:/{name}/{chosen.version}", kind
    from lookahead_ray.training.checkpoint import read_spec

    folder = resolve_path(source, "router checkpoint")
    spec = read_spec(folder)
    if list(spec.candidates) != list(pool.names):
        raise ValueError(f"router {str(folder)!r} was trained for candidates {list(spec.candidates)}, but the pool has "
                         f"{list(pool.names)}: names and order must match")
    return str(folder), spec.kind


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def engine_groups(pool: PoolConfig, engine: str) -> dict[str, tuple[str, list[CandidateSpec]]]:
    """Engine deployment name -> (engine kind, the candidates it serves: same model, same engine).

    The name is `engine-<model>` (an alias, or a path's last part), with `-hf` / `-vllm` added only
    where one model runs on both engines. `engine` is AppArgs.engine.
    """
    use_vllm = vllm_installed()
    keyed: dict[tuple[str, str], list[CandidateSpec]] = {}
    for spec in pool.candidates:
        kind = spec.engine if engine == "auto" else engine
        if kind == "vllm" and not use_vllm:
            if engine == "vllm":
                raise ValueError("args.engine is 'vllm' but the vllm module is not installed")
            log.warning("candidate %s: vllm is not installed; serving it with transformers", spec.name)
            kind = "hf"
        keyed.setdefault((spec.model, kind), []).append(spec)
    models = [model for model, _ in keyed]
    groups = {}
    for (model, kind), specs in keyed.items():
        slug = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(model.rstrip("/")).name or model)
        name = f"engine-{slug}" + (f"-{kind}" if models.count(model) > 1 else "")
        groups[name] = (kind, specs)
    return groups


def hf_engine(name: str, specs: list[CandidateSpec], args: AppArgs):
    from lookahead_ray.backbones import resolve

    options = {"num_cpus": max(s.num_cpus for s in specs), "num_gpus": max(s.num_gpus for s in specs)}
    return HFEngine.options(name=name, ray_actor_options=options).bind(
        resolve(specs[0].model), dtype=args.dtype, threads=args.hf_threads, max_model_len=args.max_model_len, name=name)


def vllm_engine(name: str, specs: list[CandidateSpec], args: AppArgs):
    """ray.serve.llm's LLMServer (as VLLMEngine) for one model: CPU placement bundles on CPU, one GPU
    per tensor-parallel worker otherwise."""
    from ray.serve.llm import LLMConfig, build_llm_deployment

    from lookahead_ray.backbones import resolve
    from lookahead_ray.serving.vllm_engine import VLLMEngine

    gpus = max(s.num_gpus for s in specs)
    tp = max(s.tensor_parallel_size for s in specs)
    if gpus > 0:
        bundles = [{"GPU": 1, "CPU": 1} for _ in range(tp)]
    else:
        bundles = [{"CPU": max(s.num_cpus for s in specs)}]
    engine_kwargs = {
        "max_model_len": args.max_model_len, "dtype": args.dtype, "tensor_parallel_size": tp,
        "gpu_memory_utilization": args.gpu_memory_utilization or (0.9 if gpus > 0 else 0.1),
        "enforce_eager": args.enforce_eager if args.enforce_eager is not None else gpus == 0,
    }
    config = LLMConfig(
        model_loading_config={"model_id": name, "model_source": resolve(specs[0].model)},
        engine_kwargs=engine_kwargs,
        placement_group_config={"bundles": bundles},
        # the engine's bundle holds the CPUs; the replica actor itself reserves none on top
        deployment_config={"ray_actor_options": {"num_cpus": 0}, "max_ongoing_requests": 64},
    )
    return build_llm_deployment(config, deployment_cls=VLLMEngine, override_serve_options={"name": name})


def build_app(args: AppArgs | dict[str, Any]):
    """The Application: checks the pool, the router and their agreement, then binds the deployments.

    Nothing starts here: `serve.run` (or `serve run`) deploys the returned Application.
    """
    from lookahead_ray.tracking import tracking_uri

    if isinstance(args, dict):
        args = AppArgs.model_validate(args)

    pool = load_app_pool(args.pool)
    check_names(pool)
    uri = args.tracking_uri or tracking_uri()
    source, router_kind = resolve_router(args.router or os.environ.get(ROUTER_ENV) or DEFAULT_ROUTER, pool, uri)
    groups = engine_groups(pool, args.engine)
    engines = {name: (vllm_engine if kind == "vllm" else hf_engine)(name, specs, args)
               for name, (kind, specs) in groups.items()}
    router = LookaheadRouter.bind(source, uri, args.router_max_batch_size, args.router_batch_wait_timeout_s,
                                  args.router_threads, args.router_precision)
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV)
    settings = IngressSettings(
        pool=pool, engine_of={s.name: name for name, (_, specs) in groups.items() for s in specs},
        router_kind=router_kind,
        router_source=source, api_key=api_key or None, default_cost_weight=args.default_cost_weight,
        listed_cost_weights=tuple(args.listed_cost_weights), max_prompt_chars=args.max_prompt_chars,
        candidate_timeout_s=args.candidate_timeout_s, fallback=args.fallback, router_timeout_s=args.router_timeout_s)
    log.info("lookahead app: router %s (%s); engines %s", source, router_kind,
             {name: (kind, [s.name for s in specs]) for name, (kind, specs) in groups.items()})
    return LookaheadIngress.bind(settings, router, engines)
