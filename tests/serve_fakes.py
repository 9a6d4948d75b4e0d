"""The ingress's HTTP app in process: DeploymentHandle-shaped wrappers around plain objects, fake
routers and engines, and a Gateway built from them. No Ray cluster, no Serve."""

from __future__ import annotations

import asyncio
from typing import Any

from lookahead_ray.config import CandidateSpec, PoolConfig
from lookahead_ray.serving.ingress import Gateway, IngressSettings, build_api
from lookahead_ray.serving.openai_api import chat_chunk, chat_completion, engine_error


class Response:
    """What `handle.method.remote(...)` returns: awaitable once, with `cancel()`."""

    def __init__(self, coroutine, owner: "Handle"):
        self.coroutine, self.owner = coroutine, owner

    def __await__(self):
        return self.coroutine.__await__()

    def cancel(self) -> None:
        self.owner.root.cancelled += 1


class Stream:
    """What `handle.options(stream=True).method.remote(...)` returns: an async iterator with `cancel()`."""

    def __init__(self, generator, owner: "Handle"):
        self.generator, self.owner = generator, owner

    def __aiter__(self):
        return self

    def __anext__(self):
        return self.generator.__anext__()

    def cancel(self) -> None:
        self.owner.root.cancelled += 1


class Method:
    def __init__(self, handle: "Handle", name: str, stream: bool):
        self.handle, self.name, self.stream = handle, name, stream

    def remote(self, *args: Any) -> Response | Stream:
        self.handle.root.calls.append((self.name, args))
        result = getattr(self.handle.target, self.name)(*args)
        return Stream(result, self.handle) if self.stream else Response(result, self.handle)


class Handle:
    """A DeploymentHandle over a plain object whose methods are coroutines or async generators."""

    def __init__(self, target: Any, stream: bool = False, root: "Handle | None" = None):
        self.target, self.streaming, self.root = target, stream, root or self
        self.calls: list = [] if root is None else root.calls
        self.cancelled = 0  # counted on the root handle

    def options(self, stream: bool = False) -> "Handle":
        return Handle(self.target, stream, self.root)

    def __getattr__(self, name: str) -> Method:
        return Method(self, name, self.streaming)


class FakeRouter:
    def __init__(self, scores: list[float]):
        self.scores = scores

    async def score(self, prompt: str) -> list[float]:
        return self.scores


class FakeEngine:
    """Answers every request with `answer`, or misbehaves as told: raise, hang, client (a 4xx
    engine_error), error_body (an error dict with no status), stall (a stream that stops after its
    first chunk)."""

    def __init__(self, name: str, behaviour: str = "ok", answer: str = "forty-two", secret: str = "SECRET-DETAIL"):
        self.name, self.behaviour, self.answer, self.secret = name, behaviour, answer, secret
        self.requests: list[dict[str, Any]] = []

    async def misbehave(self) -> dict | None:
        if self.behaviour == "raise":
            raise RuntimeError(f"{self.secret} at /internal/path/engine.py line 7")
        if self.behaviour == "hang":
            await asyncio.sleep(30)
        if self.behaviour == "client":
            return engine_error(400, "prompt too long", code="context_length_exceeded")
        if self.behaviour == "error_body":
            return {"error": {"message": self.secret, "type": "BadRequestError", "code": 400}}
        return None

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        if (error := await self.misbehave()) is not None:
            return error
        return chat_completion("chatcmpl-fake", self.name, self.answer, "stop", 3, 2)

    async def stream(self, request: dict[str, Any]):
        self.requests.append(request)
        if (error := await self.misbehave()) is not None:
            yield error
            return
        yield chat_chunk("chatcmpl-fake", self.name, {"role": "assistant", "content": self.answer})
        if self.behaviour == "stall":
            await asyncio.sleep(30)
        yield chat_chunk("chatcmpl-fake", self.name, {}, "stop")


NAMES = ("big", "small", "mid")


def settings(**overrides: Any) -> IngressSettings:
    """Three candidates on three engines; `small` is the cheapest."""
    pool = PoolConfig(tuple(CandidateSpec(name=n, model=f"model-{n}", engine="hf", cost_per_1k_input=c)
                            for n, c in zip(NAMES, (3.0, 1.0, 2.0))))
    values = dict(pool=pool, engine_of={n: f"engine-{n}" for n in NAMES}, router_kind="lookahead-mlm",
                  router_source="fake", candidate_timeout_s=2.0, stream_idle_timeout_s=0.5, router_timeout_s=2.0)
    return IngressSettings(**{**values, **overrides})


def gateway(engines: dict[str, Any] | None = None, scores=(0.9, 0.2, 0.5), **overrides: Any) -> Gateway:
    """A Gateway over fake engines (`engines`: name -> engine object, default FakeEngine each)."""
    engines = engines or {n: FakeEngine(n) for n in NAMES}
    handles = {f"engine-{n}": Handle(engine) for n, engine in engines.items()}
    return Gateway(settings(**overrides), Handle(FakeRouter(list(scores))), handles)


def api(engines: dict[str, Any] | None = None, **overrides: Any):
    """The FastAPI app of `gateway(...)`."""
    return build_api(gateway(engines, **overrides))
