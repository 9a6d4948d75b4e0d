"""The demo's last step: query the served app with the official `openai` client and print what the
router decided and what the chosen candidate answered.

    python -m lookahead_ray.serving.demo_client [--url http://127.0.0.1:8000] [--serve]

With `--serve`, an app that does not answer at --url is started first: `serve run deployments:app`
in the background (log runs/serve.log, process id runs/serve.pid), left running afterwards so that
`curl` works on it; a rerun finds it up and reuses it. Stop it with `make serve-stop`
(`kill -TERM $(cat runs/serve.pid)`; `serve run` ignores SIGINT when in the background).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

QUERIES = (
    ("lookahead", "What is 17 plus 25? Give only the number."),
    ("lookahead", "Write a Python function is_even(n) that returns True when n is even."),
    ("router-<router>-0.5", "Give me two tips for sleeping better."),
)
STREAMED = ("lookahead", "What is 6 times 7?")


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200 and json.loads(response.read()).get("status") == "ok"
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start_server(log_path: Path, pid_path: Path) -> int:
    """`serve run deployments:app` detached from this process, in its own session."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    serve = Path(sys.executable).with_name("serve")
    env = dict(os.environ)
    env.setdefault("RAY_AUTH_MODE", "disabled")  # a local, single-user Ray (see README)
    with open(log_path, "ab") as log:
        process = subprocess.Popen([str(serve), "run", "deployments:app"], stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    pid_path.write_text(f"{process.pid}\n")
    return process.pid


def wait_until_up(url: str, pid: int | None, timeout_s: float, log_path: Path) -> None:
    start = time.monotonic()
    while not healthy(url):
        if pid is not None and not _alive(pid):
            tail = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
            raise SystemExit(f"[serve] `serve run deployments:app` exited; the end of {log_path}:\n{tail}")
        if time.monotonic() - start > timeout_s:
            raise SystemExit(f"[serve] no answer from {url}/health after {timeout_s:.0f} s; see {log_path}")
        time.sleep(3)
    print(f"[serve] up at {url} after {time.monotonic() - start:.0f} s", flush=True)


def _alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        return finished == 0
    except ChildProcessError:  # not our child (an earlier run started it)
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


def describe(extra: dict) -> str:
    """One line: the answering candidate, the router's scores and ranking, any fallback."""
    if not extra.get("scores"):
        return f"direct -> {extra['candidate']}"
    scores = ", ".join(f"{name} {p:.3f}" for name, p in extra["scores"].items())
    line = (f"router {extra['router']} (cost_weight {extra['cost_weight']}) -> {extra['candidate']}  "
            f"[scores: {scores}; routing {extra['routing_ms']:.0f} ms]")
    if extra.get("fallback"):
        line += "  fallback from " + ", ".join(f["candidate"] for f in extra["failed"])
    return line


def run_queries(url: str, api_key: str, max_tokens: int) -> None:
    from openai import OpenAI  # optional: not a dependency of lookahead-ray

    client = OpenAI(base_url=f"{url}/v1", api_key=api_key, timeout=300, max_retries=1)
    ids = [m.id for m in client.models.list().data]
    print("[query] models: " + ", ".join(ids), flush=True)
    routed = next((i for i in ids if i.startswith("router-") and i.endswith("-0.5")), "lookahead")
    for model, prompt in QUERIES:
        model = routed if model == "router-<router>-0.5" else model
        start = time.perf_counter()
        response = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                  max_tokens=max_tokens)
        print(f"\n[query] model={model!r}: {prompt}", flush=True)
        print(f"  {describe(response.model_extra['lookahead'])}  ({time.perf_counter() - start:.1f} s)")
        print("  answer: " + (response.choices[0].message.content or "").strip().replace("\n", "\n          "),
              flush=True)
    model, prompt = STREAMED
    print(f"\n[query] model={model!r}, streamed: {prompt}")
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                            max_tokens=max_tokens, stream=True)
    for i, chunk in enumerate(stream):
        if i == 0:
            print(f"  {describe(chunk.model_extra['lookahead'])}")
            print("  answer: ", end="", flush=True)
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content.replace("\n", "\n          "), end="", flush=True)
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="where the app answers")
    parser.add_argument("--serve", action="store_true", help="start `serve run deployments:app` if nothing answers")
    parser.add_argument("--api-key", default=os.environ.get("LOOKAHEAD_API_KEY") or "none",
                        help="bearer token (default: $LOOKAHEAD_API_KEY)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--wait", type=float, default=900.0, help="seconds to wait for the app to come up")
    parser.add_argument("--log", default="runs/serve.log")
    parser.add_argument("--pid-file", default="runs/serve.pid")
    args = parser.parse_args(argv)
    url = args.url.rstrip("/")
    log_path, pid_path = Path(args.log), Path(args.pid_file)
    pid = None
    if healthy(url):
        print(f"[serve] already up at {url}; reusing it", flush=True)
    elif args.serve:
        pid = start_server(log_path, pid_path)
        print(f"[serve] starting `serve run deployments:app` (pid {pid}, log {log_path}); "
              "the first start loads the router and the vLLM engine (minutes on 2 CPUs)", flush=True)
    wait_until_up(url, pid, args.wait, log_path)
    run_queries(url, args.api_key, args.max_tokens)
    print(f"\n[serve] still up at {url}. Try:")
    print(f"  curl {url}/v1/models")
    print(f"  curl {url}/v1/chat/completions -H 'content-type: application/json' "
          """-d '{"model": "router-lookahead_mlm-0.5", "messages": [{"role": "user", "content": "What is 2+3?"}]}'""")
    if pid_path.exists():
        print(f"  stop it: make serve-stop  (kill -TERM $(cat {pid_path}))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
