"""Output tokens/s of vLLM vs transformers: same model, prompts, max tokens and threads, one run.

    .venv/bin/python benchmarks/generation.py [--model smollm2] [--prompts demo] [--n 32]
        [--max-tokens 64] [--batch-size 16] [--threads 1] [--dtype float32]

Both engines get the same token ids (rendered once, by generate.RenderPrompts, with the chat
template) and decode greedily for exactly --max-tokens tokens (vLLM `ignore_eos`, transformers
`min_new_tokens`), so both produce the same number of tokens. Each engine is loaded and warmed
up first; the timed part is generation only. transformers runs left-padded batches of
--batch-size, as the `hf` engine of `lookahead-ray generate` does; vLLM gets all prompts at once
and schedules them itself. --threads bounds both: torch threads for transformers, the OpenMP
cores of vLLM's CPU worker.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="HF id, path or alias")
    parser.add_argument("--prompts", default="demo", help="a --prompts source of lookahead-ray generate")
    parser.add_argument("--n", type=int, default=32, help="prompts")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16, help="transformers batch size")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for each engine")
    parser.add_argument("--dtype", default="float32")
    return parser.parse_args(argv)


def token_prompts(model_path: str, source: str, n: int) -> list[list[int]]:
    from lookahead_ray.data.generate import RenderPrompts
    from lookahead_ray.data.prompts import load_prompts

    prompts = load_prompts(source).head(n)
    render = RenderPrompts(model_path, {"bench": (None, True)})
    return [render.render("bench", p)[1] for p in prompts["prompt"]]


def run_vllm(model_path: str, prompts: list[list[int]], args: argparse.Namespace) -> tuple[int, float]:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=model_path, dtype=args.dtype, enforce_eager=True, gpu_memory_utilization=0.2,
              max_model_len=2048, seed=0)
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True)
    llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts[:2]], params, use_tqdm=False)  # warm-up
    start = time.perf_counter()
    outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    seconds = time.perf_counter() - start
    return sum(len(o.outputs[0].token_ids) for o in outputs), seconds


def run_transformers(model_path: str, prompts: list[list[int]], args: argparse.Namespace) -> tuple[int, float]:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, args.dtype)).eval()
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0

    def generate(batch: list[list[int]]) -> int:
        width = max(len(p) for p in batch)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])  # (B, L)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])  # (B, L)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, pad_token_id=pad,
                                 max_new_tokens=args.max_tokens, min_new_tokens=args.max_tokens)
        return (out.shape[1] - width) * len(batch)

    generate(prompts[:2])  # warm-up
    start = time.perf_counter()
    tokens = sum(generate(prompts[i:i + args.batch_size]) for i in range(0, len(prompts), args.batch_size))
    return tokens, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "0" if args.threads == 1 else f"0-{args.threads - 1}")
    from lookahead_ray.backbones import resolve

    model_path = resolve(args.model)
    prompts = token_prompts(model_path, args.prompts, args.n)
    results = {"transformers": run_transformers(model_path, prompts, args), "vLLM": run_vllm(model_path, prompts, args)}
    base = results["transformers"][0] / results["transformers"][1]
    print(f"\n$ {shlex.join(['python', 'benchmarks/generation.py', *sys.argv[1:]])}")
    print(f"model {args.model} ({args.dtype}), {len(prompts)} prompts of {args.prompts}, "
          f"{args.max_tokens} output tokens each, {args.threads} thread(s)\n")
    print(f"{'engine':<14}{'tokens':>8}{'seconds':>10}{'tokens/s':>11}{'vs transformers':>17}")
    for engine, (tokens, seconds) in results.items():
        rate = tokens / seconds
        print(f"{engine:<14}{tokens:>8}{seconds:>10.1f}{rate:>11.1f}{rate / base:>16.2f}x")


if __name__ == "__main__":
    main()
