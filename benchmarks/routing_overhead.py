"""What routing costs next to generation, and what @serve.batch buys, in one run on this machine.

1. Overhead: on the same prompts, one at a time, the router's decision (LookaheadRouter.score through
   a DeploymentHandle, then the ranking) vs the smallest candidate's time to first token (its
   engine's stream through a DeploymentHandle, to the first chunk with text). Target on CPU: router
   p50 <= 20 % of the SmolLM2-135M TTFT p50.
2. Throughput: routing requests/s at concurrency 32 through a DeploymentHandle, @serve.batch
   (max_batch_size 32) vs unbatched (max_batch_size 1), same replica settings. Target: >= 3x.

    python benchmarks/routing_overhead.py [--pool configs/pool-cpu.yaml] [--router SRC] [--engine auto|hf|vllm]

The router is --router, else the newest `models:/lookahead-router` version registered for the pool,
else an untrained router of configs/train-mlm-cpu.yaml's shape (latency does not depend on weights).
Prints a Markdown table and writes benchmarks/results/routing_overhead-<engine>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).resolve().parent / "results"


def pick_router(source: str | None, pool, tracking_uri: str, workdir: Path) -> tuple[str, str]:
    """(router source, how it was chosen)."""
    from lookahead_ray.config import load_train_config
    from lookahead_ray.serving.app import DEFAULT_ROUTER, resolve_path, resolve_router
    from lookahead_ray.routers.checkpoint import RouterSpec, build_router, save_router

    if source:
        return resolve_router(source, pool, tracking_uri)[0], "given"
    try:
        return resolve_router(DEFAULT_ROUTER, pool, tracking_uri)[0], "registry"
    except ValueError:
        pass
    cfg = load_train_config(resolve_path("configs/train-mlm-cpu.yaml", "train config"))
    spec = RouterSpec(kind=cfg.router, backbone=cfg.backbone, candidates=pool.names, num_layers=cfg.num_layers,
                      max_prompt_len=cfg.max_prompt_len, block_len=cfg.block_len)
    return str(save_router(build_router(spec), spec, workdir / "router")), "untrained, train-mlm-cpu.yaml shape"


def percentiles(values_s: list[float]) -> dict[str, float]:
    ms = np.asarray(values_s) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "n": len(ms)}


async def overhead(router, engine, spec, prompts: list[str], costs: list[float]) -> dict:
    from lookahead_ray.serving.ingress import engine_request, rank
    from lookahead_ray.serving.openai_api import ChatCompletionBody

    async def decide(prompt: str) -> float:
        start = time.perf_counter()
        scores = await router.score.remote(prompt)
        rank(scores, costs, 0.0)
        return time.perf_counter() - start

    async def first_token(prompt: str) -> tuple[float, int]:
        body = ChatCompletionBody(model=spec.name, messages=[{"role": "user", "content": prompt}], max_tokens=4,
                                  stream=True, stream_options={"include_usage": True})
        start, ttft, prompt_tokens = time.perf_counter(), None, 0
        async for chunk in engine.options(stream=True).stream.remote(engine_request(spec, body)):
            if ttft is None and any((c.get("delta") or {}).get("content") for c in chunk.get("choices", [])):
                ttft = time.perf_counter() - start
            if chunk.get("usage"):
                prompt_tokens = chunk["usage"]["prompt_tokens"]
        return (ttft if ttft is not None else time.perf_counter() - start), prompt_tokens

    for prompt in prompts[:3]:  # warm-up: first calls load kernels and caches
        await decide(prompt)
        await first_token(prompt)
    decisions, ttfts, tokens = [], [], []
    for prompt in prompts:
        decisions.append(await decide(prompt))
        ttft, n = await first_token(prompt)
        ttfts.append(ttft)
        tokens.append(n)
    router, ttft = percentiles(decisions), percentiles(ttfts)
    return {"router": router, "ttft": ttft, "prompt_tokens_mean": statistics.mean(tokens),
            "ratio_p50": router["p50_ms"] / ttft["p50_ms"], "ratio_p99": router["p99_ms"] / ttft["p99_ms"]}


class LoadGenerator:
    """An async Ray actor that keeps `concurrency` routing calls in flight through a DeploymentHandle
    (inside Ray, so the driver's own event-loop thread is not the bottleneck)."""

    async def run(self, app: str, prompts: list[str], concurrency: int, requests: int) -> dict:
        from ray import serve

        handle = serve.get_deployment_handle("LookaheadRouter", app)
        queue = [prompts[i % len(prompts)] for i in range(requests)]

        async def worker() -> None:
            while queue:
                await handle.score.remote(queue.pop())

        for _ in range(2):  # warm-up
            await asyncio.gather(*(handle.score.remote(p) for p in prompts[:concurrency]))
        before = await handle.stats.remote()
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        after = await handle.stats.remote()
        batches = after["batches"] - before["batches"]
        return {"requests": requests, "seconds": elapsed, "requests_per_s": requests / elapsed,
                "mean_batch": (after["requests"] - before["requests"]) / max(batches, 1),
                "torch_threads": after["torch_threads"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", default="configs/pool-cpu.yaml")
    parser.add_argument("--router", default=None, help="checkpoint folder or models:/ URI")
    parser.add_argument("--engine", default="auto", choices=["auto", "hf", "vllm"])
    parser.add_argument("--prompts", default="demo", help="a lookahead_ray.data.prompts source (default: the demo set)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=640, help="routing requests per throughput mode")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="@serve.batch batch_wait_timeout_s, in ms")
    parser.add_argument("--router-threads", type=int, default=None, help="torch threads of the router replica")
    parser.add_argument("--part", default="all", choices=["all", "overhead", "throughput"])
    args = parser.parse_args(argv)

    import ray
    from ray import serve

    from lookahead_ray.data.prompts import load_prompts
    from lookahead_ray.serving.app import AppArgs, build_app, load_app_pool
    from lookahead_ray.serving.engines import LookaheadRouter, engine_groups
    from lookahead_ray.serving.ingress import candidate_cost
    from lookahead_ray.tracking import tracking_uri

    pool = load_app_pool(args.pool)
    prompts = list(load_prompts(args.prompts)["prompt"])
    workdir = Path(tempfile.mkdtemp(prefix="routing-overhead-"))
    source, how = pick_router(args.router, pool, tracking_uri(), workdir)
    costs = [candidate_cost(s) for s in pool.candidates]
    smallest = min(pool.candidates, key=candidate_cost)  # ties: the first; the default pool is one model
    groups = engine_groups(pool, args.engine)
    engine_name, (engine_kind, _) = next((n, g) for n, g in groups.items() if smallest in g[1])
    print(f"[bench] router {source} ({how}); smallest candidate {smallest.name} on {engine_name} ({engine_kind}); "
          f"{len(prompts)} prompts", flush=True)

    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    serve.start(proxy_location="Disabled")  # DeploymentHandles only: no HTTP port
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
              "load_average_at_start": os.getloadavg(), "router": {"source": source, "chosen": how},
              "candidate": smallest.name, "engine": engine_kind}
    if args.part in ("all", "overhead"):
        app = build_app(AppArgs(pool=args.pool, router=source, engine=args.engine, router_threads=args.router_threads))
        serve.run(app, name="bench", route_prefix=None)
        router = serve.get_deployment_handle("LookaheadRouter", "bench")
        engine = serve.get_deployment_handle(engine_name, "bench")
        result["overhead"] = asyncio.run(overhead(router, engine, smallest, prompts, costs))
        serve.delete("bench")
    if args.part in ("all", "throughput"):
        modes = {}
        generator = ray.remote(num_cpus=0)(LoadGenerator).remote()
        for mode, batch in (("batched", args.concurrency), ("unbatched", 1)):
            app = LookaheadRouter.bind(source, tracking_uri(), batch, args.batch_wait_ms / 1000, args.router_threads)
            serve.run(app, name=f"tp-{mode}", route_prefix=None)
            modes[mode] = ray.get(generator.run.remote(f"tp-{mode}", prompts, args.concurrency, args.requests))
            serve.delete(f"tp-{mode}")
        modes["speedup"] = modes["batched"]["requests_per_s"] / modes["unbatched"]["requests_per_s"]
        result["throughput"] = modes
    serve.shutdown()
    ray.shutdown()

    if "overhead" in result:
        o = result["overhead"]
        print(f"\n| measure ({result['machine']}) | p50 | p99 |\n|---|---|---|")
        print(f"| router decision ({o['router']['n']} prompts) | {o['router']['p50_ms']:.1f} ms | "
              f"{o['router']['p99_ms']:.1f} ms |")
        print(f"| {smallest.name} TTFT, {engine_kind} ({o['prompt_tokens_mean']:.0f} prompt tokens on average) | "
              f"{o['ttft']['p50_ms']:.1f} ms | {o['ttft']['p99_ms']:.1f} ms |")
        print(f"| router / TTFT | {o['ratio_p50']:.1%} | {o['ratio_p99']:.1%} |")
    if "throughput" in result:
        t = result["throughput"]
        print(f"\n| routing at concurrency {args.concurrency} | requests/s | mean batch |\n|---|---|---|")
        for mode in ("batched", "unbatched"):
            print(f"| {mode} | {t[mode]['requests_per_s']:.1f} | {t[mode]['mean_batch']:.1f} |")
        print(f"| speed-up | {t['speedup']:.2f}x | |")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"routing_overhead-{engine_kind}-{args.part}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
