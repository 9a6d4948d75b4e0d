"""The Ray Serve application: `AppArgs` (its typed arguments) and `build_app` (the Application).

```
HTTP -> LookaheadIngress (ingress.py)  --score(prompt)-->  LookaheadRouter (engines.py, @serve.batch)
              |
              +--complete/stream(request)-->  engine-<model> (engines.py: ray.serve.llm LLMServer on
                                                vLLM, or HFEngine on transformers)
```

`serve run deployments:app` (or `lookahead_ray.serving.app:app`, the same builder, importable on
every node where the package is installed) calls `app` with the `args` of a Serve config, or none:
the CPU defaults. Candidates that share a model and an engine share one engine deployment: the
ingress applies each candidate's system prompt and decoding per request. Replicas, autoscaling and
resources of each deployment come from the Serve config's `deployments:` section
(deployments/config.yaml, deployments/gpu.yaml); the code sets small defaults for a 2-core machine.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lookahead_ray.config import CandidateSpec, PoolConfig, from_dict, load_pool
from lookahead_ray.registry import resolve_registered
from lookahead_ray.routers.checkpoint import read_spec
from lookahead_ray.serving.engines import LookaheadRouter, engine_groups, hf_engine_app, vllm_engine_app
from lookahead_ray.serving.auth import check_exposure, http_host
from lookahead_ray.serving.ingress import IngressSettings, LookaheadIngress
from lookahead_ray.serving.openai_api import ROUTER_MODEL, ROUTER_PREFIX
from lookahead_ray.tracking import tracking_uri

log = logging.getLogger("ray.serve")

REPO = Path(__file__).resolve().parents[2]
DEFAULT_POOL = "configs/pool-cpu.yaml"
DEFAULT_ROUTER = "models:/lookahead-router/latest"
ROUTER_ENV = "LOOKAHEAD_ROUTER"
API_KEY_ENV = "LOOKAHEAD_API_KEY"


class AppArgs(BaseModel):
    """The typed arguments of the app (the `args:` of a Serve config application). Unknown keys are errors.

    Auth: with no key (`api_key` unset and $LOOKAHEAD_API_KEY unset or empty) the API is open, so an
    app whose HTTP proxies listen beyond loopback (a Serve `http_options.host` such as 0.0.0.0)
    refuses to start unless `allow_unauthenticated: true` says that is intended (behind a gateway
    that authenticates, for example).
    """

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
    """Bearer token of /v1/* and the docs pages; None: $LOOKAHEAD_API_KEY; unset or empty: no auth.
    Any UTF-8 string."""
    allow_unauthenticated: bool = False
    """Start with no key even when the HTTP proxies listen beyond loopback (see the class docstring)."""
    max_prompt_chars: int = Field(default=16000, ge=1)
    """Longer messages (all contents together, plus 8 characters per message) get a 400 before any
    candidate sees them."""
    max_messages: int = Field(default=256, ge=1)
    """More messages in one request: a 400."""
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    """A larger request body: a 413, refused before it is read whole."""
    candidate_timeout_s: float = Field(default=120.0, gt=0)
    """A candidate that has not answered (non-streamed) or sent its first chunk (streamed) within
    this many seconds: a 504 (the answer is not generated again on another candidate)."""
    stream_idle_timeout_s: float = Field(default=60.0, gt=0)
    """A stream that sends no chunk for this long ends with an error event."""
    fallback: bool = True
    """Try the next-ranked candidate when the chosen one raises (not when it times out)."""
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
    """Context length of the engines (prompt + answer); a larger max_tokens is a 400."""
    dtype: str = "auto"
    """Model dtype of the engines: auto | float32 | bfloat16 | float16."""
    gpu_memory_utilization: float | None = None
    """vLLM memory share; None: 0.1 on CPU (a share of RAM there), 0.9 on a GPU."""
    enforce_eager: bool | None = None
    """vLLM without graph capture / compilation; None: on CPU only."""
    hf_threads: int | None = None
    """torch threads of a transformers engine replica; None: Ray's default."""


# ---------------------------------------------------------------------------------------------
# The pool and the router
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
        return resolve_registered(source, list(pool.names), tracking_uri)
    folder = resolve_path(source, "router checkpoint")
    spec = read_spec(folder)
    if list(spec.candidates) != list(pool.names):
        raise ValueError(f"router {str(folder)!r} was trained for candidates {list(spec.candidates)}, but the pool has "
                         f"{list(pool.names)}: names and order must match")
    return str(folder), spec.kind


# ---------------------------------------------------------------------------------------------
# The builder
# ---------------------------------------------------------------------------------------------


def build_app(args: AppArgs | dict[str, Any]):
    """The Application: checks the pool, the router and their agreement, then binds the deployments.

    Nothing starts here: `serve.run` (or `serve run`) deploys the returned Application.
    """
    if isinstance(args, dict):
        args = AppArgs.model_validate(args)
    api_key = (args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV)) or None
    check_exposure(http_host(), api_key, args.allow_unauthenticated)

    pool = load_app_pool(args.pool)
    check_names(pool)
    uri = args.tracking_uri or tracking_uri()
    source, router_kind = resolve_router(args.router or os.environ.get(ROUTER_ENV) or DEFAULT_ROUTER, pool, uri)
    groups = engine_groups(pool, args.engine)
    engines = {name: (vllm_engine_app if kind == "vllm" else hf_engine_app)(name, specs, args)
               for name, (kind, specs) in groups.items()}
    router = LookaheadRouter.bind(source, uri, args.router_max_batch_size, args.router_batch_wait_timeout_s,
                                  args.router_threads, args.router_precision)
    settings = IngressSettings(
        pool=pool, engine_of={s.name: name for name, (_, specs) in groups.items() for s in specs},
        router_kind=router_kind, router_source=source, api_key=api_key,
        allow_unauthenticated=args.allow_unauthenticated, default_cost_weight=args.default_cost_weight,
        listed_cost_weights=tuple(args.listed_cost_weights), max_prompt_chars=args.max_prompt_chars,
        max_messages=args.max_messages, max_body_bytes=args.max_body_bytes, max_model_len=args.max_model_len,
        candidate_timeout_s=args.candidate_timeout_s, stream_idle_timeout_s=args.stream_idle_timeout_s,
        fallback=args.fallback, router_timeout_s=args.router_timeout_s)
    log.info("lookahead app: router %s (%s); engines %s", source, router_kind,
             {name: (kind, [s.name for s in specs]) for name, (kind, specs) in groups.items()})
    return LookaheadIngress.bind(settings, router, engines)


# Serve validates a builder's args only when the annotation is a class; under `from __future__
# import annotations` it is a string, so Serve passes the dict and build_app validates it (the same
# AppArgs errors either way).
def app(args: AppArgs | dict[str, Any]):
    """The application builder behind `serve run deployments:app` (deployments/ re-exports it)."""
    return build_app(args)
