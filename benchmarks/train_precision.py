"""Training and scoring speed on the CPU: fp32 against bf16 autocast, length bucketing, torch.compile.

    python benchmarks/train_precision.py --data ../shared/data/lookahead-release [--steps 8] [--variants fp32,bf16,compile]

The replay's CPU router (Lookahead-MLM, all-MiniLM-L6-v2 cut to 4 layers, 248-token sequences, 16
queries a step) takes optimizer steps on real release prompts. The variants run interleaved, one
step each in turn, so that a load change on this shared machine hits them alike; the table reports
each variant's median step time and its ratio to fp32 measured in the same run. bf16 autocast only
pays where the CPU has bf16 matrix units (AMX, avx512_bf16); the script prints which flags it found.
Length bucketing: batches drawn from length-sorted buckets pad less than random batches; the table
reports the padded tokens per step of each. Each round prints a progress line (the warm-up round
includes torch.compile's compilation, and bf16 without matrix units is emulated and slow:
`--variants fp32,compile` leaves it out). The last line is the command that made the table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch


def cpu_flags() -> list[str]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return sorted({flag for flag in text.split() if flag.startswith("amx") or flag == "avx512_bf16"})


def examples(data: str, n: int, seed: int = 0) -> list[dict]:
    from lookahead_ray.config import load_train_config
    from lookahead_ray.training.data import training_frames

    cfg = load_train_config(Path(__file__).resolve().parents[1] / "configs" / "replay-mlm-cpu.yaml", dataset=data)
    train, _ = training_frames(cfg)
    rows = train.sample(n=min(n, len(train)), random_state=seed)
    return [{"prompt": p, "responses": list(r), "labels": list(y)}
            for p, r, y in zip(rows["prompt"], rows["responses"], rows["labels"])]


def build_model():
    from lookahead_ray.routers.checkpoint import RouterSpec, build_router

    spec = RouterSpec(kind="lookahead-mlm", backbone="minilm", candidates=tuple(f"c{i}" for i in range(5)),
                      num_layers=4, max_prompt_len=128, block_len=24)
    return build_router(spec).train()


def batches(pool: list[dict], batch_size: int, steps: int, bucketed: bool, tokenizer) -> list[list[dict]]:
    """`steps` batches: random draws, or draws from one bucket of similar prompt lengths each."""
    rng = np.random.default_rng(0)
    if not bucketed:
        return [[pool[i] for i in rng.choice(len(pool), batch_size, replace=False)] for _ in range(steps)]
    lengths = [len(tokenizer(e["prompt"], truncation=True, max_length=128)["input_ids"]) for e in pool]
    order = np.argsort(lengths)
    buckets = [order[i:i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
    return [[pool[i] for i in buckets[j]] for j in rng.choice(len(buckets), steps)]


def make_step(model, optimizer, autocast):
    collator = model.collator()

    def step(examples: list[dict]) -> tuple[float, int]:
        batch = collator(examples, mask_rate=0.6)
        start = time.perf_counter()
        with autocast():
            loss = model.training_loss(batch)
        loss.total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start, int(batch["input_ids"].numel())

    return step


VARIANTS = ("fp32", "bf16", "compile")


def variant_steps(names: list[str]) -> tuple[dict, object]:
    """({table label: step function} of the asked variants, the tokenizer); `compile` times a second model whose
    encoder is compiled (dynamic shapes: batches differ in length), in fp32."""
    model = build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)  # a tiny lr: the weights barely move between variants
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    steps = {}
    if "fp32" in names:
        steps["fp32"] = make_step(model, optimizer, nullcontext)
    if "bf16" in names:
        steps["bf16 autocast"] = make_step(model, optimizer, bf16)
    if "compile" in names:
        other = build_model()
        other.mlm.bert = torch.compile(other.mlm.bert, dynamic=True)
        steps["torch.compile fp32"] = make_step(other, torch.optim.AdamW(other.parameters(), lr=1e-5), nullcontext)
    return steps, model.tokenizer


def parse_variants(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown or "fp32" not in names:
        raise SystemExit(f"--variants: {text!r} must list fp32 (the reference) and only {', '.join(VARIANTS)}; "
                         f"unknown: {unknown}")
    return names


def time_rounds(variants: dict, plans: dict, steps: int) -> tuple[dict, dict]:
    """Interleaved rounds (every variant on every plan's i-th batch); round 0 warms up and is not counted."""
    times = {(v, p): [] for v in variants for p in plans}
    tokens = {p: [] for p in plans}
    for i in range(steps + 1):
        started = time.perf_counter()
        for plan, plan_batches in plans.items():
            for name, step in variants.items():
                took, n_tokens = step(plan_batches[i])
                if i:
                    times[(name, plan)].append(took)
                    tokens[plan].append(n_tokens)
        label = "warm-up round" if i == 0 else f"round {i}/{steps}"
        print(f"[precision] {label}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return times, tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the release folder or an imported dataset")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default="fp32,bf16",
                        help=f"comma-separated, from {', '.join(VARIANTS)} (compile: its first step compiles, about 30 s here)")
    args = parser.parse_args(argv)
    names = parse_variants(args.variants)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pool = examples(args.data, 400)
    variants, tokenizer = variant_steps(names)
    plans = {"random batches": batches(pool, args.batch_size, args.steps + 1, False, tokenizer),
             "length buckets": batches(pool, args.batch_size, args.steps + 1, True, tokenizer)}
    times, tokens = time_rounds(variants, plans, args.steps)
    print(f"CPU bf16 flags: {', '.join(cpu_flags()) or 'none (no AMX, no avx512_bf16)'}; torch {torch.__version__}; "
          f"{args.threads} threads; {args.steps} steps per cell, interleaved")
    base = statistics.median(times[("fp32", "random batches")])
    print("| variant | batches | median s/step | vs fp32 random | padded tokens/step |")
    print("|---|---|---:|---:|---:|")
    for (name, plan), values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {plan} | {median:.3f} | {base / median:.2f}x | {np.mean(tokens[plan]):.0f} |")
    print("command: python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
