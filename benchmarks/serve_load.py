"""A bounded load test of a running app, over HTTP on the loopback only.

    serve run deployments:app &            # or: python -m lookahead_ray.serving.demo_client --serve
    python benchmarks/serve_load.py [--url http://127.0.0.1:8000] [--requests 2000] [--concurrency 32]

Sends --requests chat completions, --concurrency at a time: routed ones (`lookahead` and
`router-<router>-0.5`, a share of them streamed) on the demo prompts with a small max_tokens, and a
share of bad requests (malformed JSON, empty messages, unknown model, cost weight out of range,
wrong types) that must get 4xx. Passes with zero 5xx and zero transport errors. Stops issuing after
--max-seconds. Prints a Markdown table and writes benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
BAD = (
    b'{"model": "lookahead", "messages": [',
    b'{"model": "lookahead", "messages": []}',
    b'{"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}',
    b'{"model": "lookahead", "cost_weight": 3, "messages": [{"role": "user", "content": "hi"}]}',
    b'{"model": "lookahead", "max_tokens": "8", "messages": [{"role": "user", "content": "hi"}]}',
    b'{"model": "lookahead", "messages": [{"role": "robot", "content": "hi"}]}',
)


def plan(n: int, prompts: list[str], models: list[str], bad_share: float, stream_share: float,
         max_tokens: int) -> list[tuple[str, bytes, bool]]:
    """(kind, body, streamed) per request, interleaved deterministically."""
    out = []
    bad_every = round(1 / bad_share) if bad_share > 0 else 0
    stream_every = round(1 / stream_share) if stream_share > 0 else 0
    for i in range(n):
        if bad_every and i % bad_every == bad_every - 1:
            out.append(("bad", BAD[(i // bad_every) % len(BAD)], False))
            continue
        stream = bool(stream_every) and i % stream_every == 0
        body = {"model": models[i % len(models)], "max_tokens": max_tokens, "stream": stream,
                "messages": [{"role": "user", "content": prompts[i % len(prompts)]}]}
        out.append(("good", json.dumps(body).encode(), stream))
    return out


async def run(url: str, requests: list[tuple[str, bytes, bool]], concurrency: int, max_seconds: float,
              headers: dict[str, str]) -> dict:
    import httpx

    records: list[dict] = []
    queue = collections.deque(enumerate(requests))
    deadline = time.monotonic() + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def one(client: httpx.AsyncClient, kind: str, body: bytes, stream: bool) -> dict:
        start = time.perf_counter()
        record = {"kind": kind, "stream": stream, "status": None, "candidate": None, "fallback": False}
        try:
            async with client.stream("POST", f"{url}/v1/chat/completions", content=body,
                                     headers={"content-type": "application/json", **headers}) as response:
                record["status"] = response.status_code
                record["candidate"] = response.headers.get("x-lookahead-candidate")
                record["fallback"] = "x-lookahead-fallback-from" in response.headers
                payload = await response.aread()
                if stream and response.status_code == 200 and b'"error"' in payload:
                    record["status"] = "stream-error"
        except httpx.HTTPError as err:
            record["status"] = f"transport: {type(err).__name__}"
        record["latency_s"] = time.perf_counter() - start
        return record

    async def worker(client: httpx.AsyncClient) -> None:
        while queue and time.monotonic() < deadline:
            _, (kind, body, stream) = queue.popleft()
            records.append(await one(client, kind, body, stream))

    start = time.perf_counter()
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(600.0)) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return {"records": records, "seconds": time.perf_counter() - start, "not_sent": len(queue)}


def summarise(outcome: dict, concurrency: int) -> dict:
    records = outcome["records"]
    statuses = collections.Counter(str(r["status"]) for r in records)
    good = [r for r in records if r["kind"] == "good"]
    ok = [r["latency_s"] * 1000 for r in good if r["status"] == 200]
    bad_ok = all(isinstance(r["status"], int) and 400 <= r["status"] < 500 for r in records if r["kind"] == "bad")
    server_errors = sum(1 for r in records if isinstance(r["status"], int) and r["status"] >= 500)
    failures = sum(1 for r in records if not isinstance(r["status"], int))
    pct = (lambda q: float(np.percentile(ok, q))) if ok else (lambda q: float("nan"))
    return {
        "sent": len(records), "not_sent": outcome["not_sent"], "concurrency": concurrency,
        "seconds": outcome["seconds"], "requests_per_s": len(records) / outcome["seconds"],
        "statuses": dict(statuses), "server_errors_5xx": server_errors, "transport_or_stream_errors": failures,
        "bad_requests_all_4xx": bad_ok,
        "ok_latency_ms": {"p50": pct(50), "p90": pct(90), "p99": pct(99), "max": max(ok) if ok else float("nan")},
        "streamed": sum(1 for r in good if r["stream"]),
        "candidates": dict(collections.Counter(r["candidate"] for r in good if r["candidate"])),
        "fallbacks": sum(1 for r in good if r["fallback"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--bad-share", type=float, default=0.1, help="share of bad requests (4xx expected)")
    parser.add_argument("--stream-share", type=float, default=0.2, help="share of good requests that stream")
    parser.add_argument("--max-seconds", type=float, default=1200.0, help="stop issuing requests after this")
    parser.add_argument("--prompts", default="demo", help="a lookahead_ray.data.prompts source")
    parser.add_argument("--api-key", default=os.environ.get("LOOKAHEAD_API_KEY"))
    parser.add_argument("--out", default=str(RESULTS / "serve_load.json"))
    args = parser.parse_args(argv)

    url = args.url.rstrip("/")
    if urlparse(url).hostname not in LOOPBACK:
        raise SystemExit(f"--url {url}: this load test only targets the loopback (127.0.0.1, localhost, ::1)")
    import httpx

    from lookahead_ray.data.prompts import load_prompts

    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    ids = [m["id"] for m in httpx.get(f"{url}/v1/models", headers=headers, timeout=30).json()["data"]]
    models = ["lookahead"] + [i for i in ids if i.startswith("router-") and i.endswith("-0.5")][:1]
    prompts = list(load_prompts(args.prompts)["prompt"])
    requests = plan(args.requests, prompts, models, args.bad_share, args.stream_share, args.max_tokens)
    print(f"[load] {len(requests)} requests at concurrency {args.concurrency} to {url} (models {models}, "
          f"max_tokens {args.max_tokens})", flush=True)
    load_before = os.getloadavg()
    summary = summarise(asyncio.run(run(url, requests, args.concurrency, args.max_seconds, headers)), args.concurrency)
    summary["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    summary["load_average"] = {"start": load_before, "end": os.getloadavg()}

    lat = summary["ok_latency_ms"]
    print(f"\n| requests | concurrency | seconds | req/s | 5xx | 4xx as expected | p50 | p90 | p99 |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {summary['sent']} | {args.concurrency} | {summary['seconds']:.0f} | {summary['requests_per_s']:.1f} | "
          f"{summary['server_errors_5xx']} | {summary['bad_requests_all_4xx']} | {lat['p50']:.0f} ms | "
          f"{lat['p90']:.0f} ms | {lat['p99']:.0f} ms |")
    print(f"statuses {summary['statuses']}; candidates {summary['candidates']}; fallbacks {summary['fallbacks']}; "
          f"not sent {summary['not_sent']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")
    passed = summary["server_errors_5xx"] == 0 and summary["transport_or_stream_errors"] == 0 \
        and summary["bad_requests_all_4xx"] and summary["not_sent"] == 0
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
