"""The deployments behind the ingress: the router (scores) and the candidate engines (answers).

An engine takes the engine request that `ingress.engine_request` builds (a dict: messages, decoding,
stream flags) and answers `complete(request) -> chat.completion dict` and `stream(request)` (chunk
dicts). A request the engine cannot serve as asked comes back as `openai_api.engine_error` (a 4xx the
ingress answers without falling back); anything it raises is a candidate failure.

- `TransformersEngine`: the transformers engine, on `data.hf_core` (the generation core that
  `generate` uses too); `HFEngine` is its Serve deployment.
- vLLM: ray.serve.llm's LLMServer as `vllm_engine.VLLMEngine`, built by `vllm_engine_app`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, AsyncIterator

from ray import serve

from lookahead_ray.backbones import resolve
from lookahead_ray.candidates import engine_dtype
from lookahead_ray.config import CandidateSpec, PoolConfig
from lookahead_ray.data.generate import engine_groups as shared_groups
from lookahead_ray.data.hf_core import Decoding, HFCore, StopText, cut_at_stop
from lookahead_ray.serving.openai_api import chat_chunk, chat_completion, completion_id, engine_error, plain_prompt

log = logging.getLogger("ray.serve")


# ---------------------------------------------------------------------------------------------
# The router
# ---------------------------------------------------------------------------------------------


@serve.deployment(name="LookaheadRouter", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
class LookaheadRouter:
    """Scores prompts with a trained router: `score(prompt) -> [p_1..p_T]`, sigmoid of its logits.

    Concurrent calls are grouped by @serve.batch into one forward pass (max_batch_size 1: unbatched).
    """

    def __init__(self, source: str, tracking_uri: str | None = None, max_batch_size: int = 32,
                 batch_wait_timeout_s: float = 0.005, threads: int | None = None, precision: str = "float32"):
        # heavy imports (torch): only in the router replica
        import torch

        from lookahead_ray.registry import resolve_checkpoint
        from lookahead_ray.routers.predictor import RouterPredictor

        if tracking_uri:
            os.environ["MLFLOW_TRACKING_URI"] = tracking_uri  # resolve_checkpoint reads it for models:/ URIs
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.predictor = RouterPredictor.load(resolve_checkpoint(source), batch_size=max_batch_size, precision=precision)
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


# ---------------------------------------------------------------------------------------------
# The transformers engine
# ---------------------------------------------------------------------------------------------


def decoding(request: dict[str, Any]) -> Decoding:
    """The engine request's decoding fields in the generation core's terms."""
    top = (request.get("top_logprobs") or 0) if request.get("logprobs") else None
    return Decoding(max_tokens=request["max_tokens"], temperature=request["temperature"], top_p=request["top_p"],
                    seed=request["seed"], stop=tuple(request.get("stop") or ()),
                    presence_penalty=request.get("presence_penalty") or 0.0,
                    frequency_penalty=request.get("frequency_penalty") or 0.0, top_logprobs=top)


class TransformersEngine:
    """A transformers engine for candidates that share one model. One generation at a time."""

    def __init__(self, model_path: str, dtype: str = "auto", threads: int | None = None, max_model_len: int = 2048,
                 name: str = "hf"):
        self.core = HFCore(model_path, dtype, threads)
        self.name, self.max_model_len = name, max_model_len
        self.lock = asyncio.Lock()

    def prompt_ids(self, request: dict[str, Any]) -> list[int]:
        tokenizer = self.core.tokenizer
        if not request["chat_template"]:
            return list(tokenizer(plain_prompt(request["messages"])).input_ids)
        if not tokenizer.chat_template:  # a candidate misconfigured: a failure, the next candidate answers
            raise ValueError(f"{self.name}: the candidate wants a chat template but the tokenizer has none")
        text = tokenizer.apply_chat_template(request["messages"], tokenize=False, add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False).input_ids)

    def refusal(self, ids: list[int], request: dict[str, Any], stream: bool) -> dict | None:
        """An engine_error (a 4xx) for a request this engine cannot honour, else None."""
        if len(ids) + request["max_tokens"] > self.max_model_len:
            return engine_error(400, f"the prompt has {len(ids)} tokens and max_tokens is {request['max_tokens']}: "
                                     f"more than this candidate's context of {self.max_model_len} tokens",
                                code="context_length_exceeded", param="max_tokens")
        response_format = request.get("response_format") or {"type": "text"}
        if response_format["type"] != "text":  # transformers has no guided decoding: refuse, never ignore
            return engine_error(400, f"candidate {self.name} runs on transformers, which cannot constrain an answer "
                                     f"to JSON; ask a vLLM candidate", code="unsupported_parameter",
                                param="response_format")
        if stream and request.get("logprobs"):
            return engine_error(400, f"candidate {self.name} runs on transformers, which streams text without "
                                     f"logprobs; send stream: false", code="unsupported_parameter", param="logprobs")
        return None

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        ids = self.prompt_ids(request)
        if error := self.refusal(ids, request, stream=False):
            return error
        spec = decoding(request)
        async with self.lock:
            new, steps = await asyncio.to_thread(self.core.generate, [ids], spec)
        ending = self.core.end(new[0], spec.max_tokens)
        text, stopped = cut_at_stop(self.core.decode(ending.tokens), spec.stop)
        logprobs = None if steps is None else self.core.logprobs(ending.tokens, steps[0], spec.top_logprobs)
        return chat_completion(completion_id(), self.name, text, "stop" if stopped else ending.finish, len(ids),
                               ending.generated, logprobs)

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        from transformers import TextIteratorStreamer  # heavy: transformers only when a replica streams

        ids = self.prompt_ids(request)
        if error := self.refusal(ids, request, stream=True):
            yield error
            return
        spec, cid = decoding(request), completion_id()
        cut = StopText(spec.stop)
        async with self.lock:
            streamer = TextIteratorStreamer(self.core.tokenizer, skip_prompt=True, skip_special_tokens=True)
            stop, outcome = threading.Event(), {}

            def run() -> None:
                try:
                    outcome["new"] = self.core.generate([ids], spec, streamer, stop.is_set)[0][0]
                except BaseException as err:  # surfaces in the stream below
                    outcome["error"] = err
                    streamer.end()

            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            pieces = iter(streamer)
            first = True
            try:
                while (piece := await asyncio.to_thread(next, pieces, None)) is not None:
                    text = cut.feed(piece)
                    if cut.stopped:
                        stop.set()  # a stop sequence: no more tokens are needed
                    if not text:
                        continue
                    yield chat_chunk(cid, self.name, {"role": "assistant", "content": text} if first else
                                     {"content": text})
                    first = False
                await asyncio.to_thread(thread.join)
            finally:
                stop.set()  # a cancelled stream (client gone) stops generating at the next token
        if "error" in outcome:
            raise outcome["error"]
        if rest := cut.flush():
            yield chat_chunk(cid, self.name, {"role": "assistant", "content": rest} if first else {"content": rest})
            first = False
        ending = self.core.end(outcome["new"], spec.max_tokens)
        yield chat_chunk(cid, self.name, {"role": "assistant", "content": ""} if first else {},
                         "stop" if cut.stopped else ending.finish)
        if request["include_usage"]:
            usage = {"prompt_tokens": len(ids), "completion_tokens": ending.generated,
                     "total_tokens": len(ids) + ending.generated}
            yield chat_chunk(cid, self.name, None, usage=usage)


@serve.deployment(name="HFEngine", ray_actor_options={"num_cpus": 1}, max_ongoing_requests=32,
                  health_check_period_s=10)
class HFEngine(TransformersEngine):
    """TransformersEngine as a Serve deployment: `complete(request)` and `stream(request)`."""

    def check_health(self) -> None:
        pass  # the replica answers: healthy


# ---------------------------------------------------------------------------------------------
# Engine groups and their deployments
# ---------------------------------------------------------------------------------------------


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def engine_kind(spec: CandidateSpec, engine: str, use_vllm: bool) -> str:
    """The engine a candidate is served with: its own (`engine` auto) or `engine`; transformers where
    vllm is not installed."""
    kind = spec.engine if engine == "auto" else engine
    if kind == "vllm" and not use_vllm:
        if engine == "vllm":
            raise ValueError("args.engine is 'vllm' but the vllm module is not installed")
        log.warning("candidate %s: vllm is not installed; serving it with transformers", spec.name)
        return "hf"
    return kind


def engine_groups(pool: PoolConfig, engine: str) -> dict[str, tuple[str, list[CandidateSpec]]]:
    """Engine deployment name -> (engine kind, the candidates it serves: same model, same engine).

    The grouping is `data.generate.engine_groups` (the one used for generation too), on the engine
    each candidate is served with. The name is `engine-<model>` (an alias, or a path's last part),
    with `-hf` / `-vllm` added only where one model runs on both engines. `engine` is AppArgs.engine.
    """
    use_vllm = vllm_installed()
    served = PoolConfig(tuple(dataclasses.replace(spec, engine=engine_kind(spec, engine, use_vllm))
                              for spec in pool.candidates))
    groups = shared_groups(served)
    models = [specs[0].model for specs in groups]
    named = {}
    for specs in groups:
        model, kind = specs[0].model, specs[0].engine
        slug = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(model.rstrip("/")).name or model)
        named[f"engine-{slug}" + (f"-{kind}" if models.count(model) > 1 else "")] = (kind, specs)
    return named


def hf_engine_app(name: str, specs: list[CandidateSpec], args):
    """The HFEngine deployment of one model; `args` is app.AppArgs."""
    options = {"num_cpus": max(s.num_cpus for s in specs), "num_gpus": max(s.num_gpus for s in specs)}
    return HFEngine.options(name=name, ray_actor_options=options).bind(
        resolve(specs[0].model), dtype=args.dtype, threads=args.hf_threads, max_model_len=args.max_model_len, name=name)


def vllm_engine_app(name: str, specs: list[CandidateSpec], args):
    """ray.serve.llm's LLMServer (as VLLMEngine) for one model: CPU placement bundles on CPU, one GPU
    per tensor-parallel worker otherwise."""
    # imported here: ray.serve.llm needs the vllm module, which a CPU install may lack
    from ray.serve.llm import LLMConfig, build_llm_deployment

    from lookahead_ray.serving.vllm_engine import VLLMEngine  # optional: imports ray.serve.llm, as above

    gpus = max(s.num_gpus for s in specs)
    tp = max(s.tensor_parallel_size for s in specs)
    if gpus > 0:
        bundles = [{"GPU": 1, "CPU": 1} for _ in range(tp)]
    else:
        bundles = [{"CPU": max(s.num_cpus for s in specs)}]
    engine_kwargs = {
        "max_model_len": args.max_model_len, "tensor_parallel_size": tp,
        "dtype": engine_dtype(args.dtype, gpus > 0),  # auto: float32 on a CPU without native bf16
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
