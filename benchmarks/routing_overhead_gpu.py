"""Routing overhead on a GPU: the router's decision vs a 7B-class candidate's time to first token.

Issue target: where a GPU is lent, router decision p50 <= 5 % of a 7B-class candidate's TTFT p50
(the paper's figure), on the same prompts, in one run. Also what batching buys on the GPU: routing
requests/s scoring 32 prompts per forward pass vs one.

    python benchmarks/routing_overhead_gpu.py --data ../shared/data/lookahead-release
    python benchmarks/routing_overhead_gpu.py --prompts prompts.json --random-weights --tokenizer DIR --bert-tokenizer DIR

The routers are the paper's GPU settings (configs/replay-{mlm,mlc,clm}-gpu.yaml: ModernBERT-base and
SmolLM2-135M, 512 prompt tokens, 64-slot blocks) built through the project's own RouterSpec ->
build_router -> save_router -> RouterPredictor path; the candidate is loaded with transformers
(bf16, SDPA) and its TTFT is one prefill forward pass plus the first token's argmax. With
--random-weights (a machine with no model hub) every model is built from its published shape with
random weights: latency depends on the shapes, not on the weights. Prints Markdown tables and writes
routing_overhead-gpu.json into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Published shapes (config.json of each hub model), for --random-weights.
QWEN25_7B = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                 num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768, rope_theta=1e6)
MODERNBERT_BASE = dict(hidden_size=768, intermediate_size=1152, num_hidden_layers=22, num_attention_heads=12)
TEST_BENCHMARKS = ("GSM8K", "MATH", "HumanEval", "MBPP")


def release_prompts(data: str, per_benchmark: int, seed: int = 0) -> list[str]:
    """`per_benchmark` seeded prompts from each of the four replay test sets of a release folder."""
    from lookahead_ray.data.release import import_release

    frame = import_release(data)
    rng = random.Random(seed)
    prompts = []
    for benchmark in TEST_BENCHMARKS:
        pool = frame.loc[frame["benchmark"] == benchmark, "prompt"].tolist()
        if not pool:
            raise ValueError(f"{data}: no {benchmark} prompts")
        prompts += rng.sample(pool, min(per_benchmark, len(pool)))
    return prompts


def read_prompts(path: str) -> list[str]:
    prompts = json.loads(Path(path).read_text())
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"{path}: expected a non-empty JSON list of prompt strings")
    return prompts


def random_backbone(kind: str, tokenizer_dir: str, out: Path) -> str:
    """A backbone folder of the paper's shape with random weights and the given tokenizer."""
    import torch
    from transformers import (AutoConfig, AutoTokenizer, LlamaForCausalLM, ModernBertConfig,
                              ModernBertForMaskedLM)

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    if kind == "modernbert-base":
        config = ModernBertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                  cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id,
                                  bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                                  **MODERNBERT_BASE)
        model = ModernBertForMaskedLM(config)
    else:  # smollm2-135m: the tokenizer folder holds its config.json too
        model = LlamaForCausalLM(AutoConfig.from_pretrained(tokenizer_dir))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def router_predictor(config_file: str, backbone: str | None, candidates: tuple[str, ...], workdir: Path,
                     device: str, precision: str = "float32"):
    """A RouterPredictor on `device` for one replay GPU config (its backbone replaced if given)."""
    from lookahead_ray.config import load_train_config
    from lookahead_ray.routers.predictor import RouterPredictor
    from lookahead_ray.routers.checkpoint import RouterSpec, build_router, save_router

    cfg = load_train_config(config_file)
    spec = RouterSpec(kind=cfg.router, backbone=backbone or cfg.backbone, candidates=candidates,
                      num_layers=cfg.num_layers, max_prompt_len=cfg.max_prompt_len, block_len=cfg.block_len,
                      max_response_len=cfg.max_response_len)
    folder = save_router(build_router(spec), spec, workdir / cfg.router)
    return RouterPredictor.load(str(folder), batch_size=32, device=device, precision=precision)


def candidate_model(name: str | None, tokenizer_dir: str, device: str):
    """(model, tokenizer, label): `name` from its weights, or Qwen2.5-7B's shape with random weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    if name:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.bfloat16, attn_implementation="sdpa")
        return model.to(device).eval(), AutoTokenizer.from_pretrained(name), name
    config = Qwen2Config(**QWEN25_7B)
    config._attn_implementation = "sdpa"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return model.eval(), AutoTokenizer.from_pretrained(tokenizer_dir), "Qwen2.5-7B shape, random weights"


def time_it(fn) -> float:
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def first_token(model, tokenizer, prompt: str) -> int:
    """Prefill the chat-formatted prompt and pick the first answer token (greedy)."""
    import torch

    messages = [{"role": "user", "content": prompt}]
    try:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    except ValueError:  # no chat template
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids.to(model.device), use_cache=True, logits_to_keep=1).logits
    return int(logits[0, -1].argmax())


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "n": len(ms)}


def overhead(predictors: dict, model, tokenizer, prompts: list[str]) -> dict:
    """Per prompt, interleaved: each router's decision (tokenize, forward, rank) and the candidate's TTFT."""
    for prompt in prompts[:3]:  # warm-up: kernels, allocator, caches
        first_token(model, tokenizer, prompt)
        for predictor in predictors.values():
            predictor.route([prompt])
    times = {name: [] for name in predictors} | {"ttft": []}
    for prompt in prompts:
        times["ttft"].append(time_it(lambda: first_token(model, tokenizer, prompt)))
        for name, predictor in predictors.items():
            times[name].append(time_it(lambda: predictor.route([prompt])))
    result = {name: percentiles(values) for name, values in times.items()}
    for name in predictors:
        result[name]["ratio_p50"] = result[name]["p50_ms"] / result["ttft"]["p50_ms"]
        result[name]["ratio_p99"] = result[name]["p99_ms"] / result["ttft"]["p99_ms"]
    return result


def throughput(predictor, prompts: list[str], batch: int, rounds: int = 3) -> float:
    """Routing requests/s scoring `batch` prompts per forward pass (best of `rounds`)."""
    predictor.batch_size = batch
    predictor.route(prompts[:batch])
    best = 0.0
    for _ in range(rounds):
        elapsed = time_it(lambda: [predictor.route(prompts[i : i + batch]) for i in range(0, len(prompts), batch)])
        best = max(best, len(prompts) / elapsed)
    return best


def report(result: dict) -> None:
    o = result["overhead"]
    print(f"\n| on {result['device']} | p50 | p99 | p50 / TTFT p50 |\n|---|---:|---:|---:|")
    print(f"| {result['candidate']} TTFT (transformers, bf16) | {o['ttft']['p50_ms']:.1f} ms | {o['ttft']['p99_ms']:.1f} ms | |")
    for name in result["routers"]:
        print(f"| router {name} decision | {o[name]['p50_ms']:.1f} ms | {o[name]['p99_ms']:.1f} ms | {o[name]['ratio_p50']:.1%} |")
    print(f"\n| routing requests/s ({len(result['prompts'])} prompts) | batch 1 | batch 32 | speed-up |\n|---|---:|---:|---:|")
    for name, t in result["throughput"].items():
        print(f"| {name} | {t['batch_1']:.0f} | {t['batch_32']:.0f} | {t['speedup']:.1f}x |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="a release folder: 16 seeded prompts of each replay test set")
    source.add_argument("--prompts", help="a JSON list of prompt strings")
    parser.add_argument("--candidate", default=None, help="a 7B-class model id or path (default: Qwen2.5-7B's shape)")
    parser.add_argument("--random-weights", action="store_true", help="build every model from its shape")
    parser.add_argument("--tokenizer", default=None, help="SmolLM2 folder (tokenizer + config.json) for --random-weights")
    parser.add_argument("--bert-tokenizer", default=None, help="a WordPiece tokenizer with [unused*] for --random-weights")
    parser.add_argument("--configs", default="configs", help="folder of the replay-*-gpu.yaml configs")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--device", default="cuda", help="cpu only for a dry run of the script")
    args = parser.parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: this benchmark measures the GPU path (benchmarks/routing_overhead.py is the CPU one)")
    if args.random_weights and not (args.tokenizer and args.bert_tokenizer):
        parser.error("--random-weights needs --tokenizer and --bert-tokenizer")
    prompts = release_prompts(args.data, 16) if args.data else read_prompts(args.prompts)
    workdir = Path(tempfile.mkdtemp(prefix="routing-gpu-"))
    candidates = ("Yi-1.5-34B-Chat", "internlm2_5-20b-chat", "Phi-3-medium-4k-instruct", "Llama-3.1-8B-Instruct",
                  "Qwen2.5-Coder-7B-Instruct")
    backbones = {"lookahead-mlm": None, "mlc": None, "lookahead-clm": None}
    if args.random_weights:
        bert = random_backbone("modernbert-base", args.bert_tokenizer, workdir / "ModernBERT-base")
        backbones = {"lookahead-mlm": bert, "mlc": bert,
                     "lookahead-clm": random_backbone("smollm2-135m", args.tokenizer, workdir / "SmolLM2-135M")}
    files = {"lookahead-mlm": "replay-mlm-gpu.yaml", "mlc": "replay-mlc-gpu.yaml", "lookahead-clm": "replay-clm-gpu.yaml"}
    predictors = {f"{name}{suffix}": router_predictor(str(Path(args.configs) / files[name]), backbones[name],
                                                      candidates, workdir / precision, args.device, precision)
                  for name in files for precision, suffix in (("float32", ""), ("bfloat16", " bf16"))}
    model, tokenizer, label = candidate_model(None if args.random_weights else args.candidate, args.tokenizer, args.device)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else args.device
    result = {"device": device_name, "candidate": label, "prompts": prompts,
              "routers": {name: f"{files[name.split()[0]]}, " + (f"{Path(backbones[name.split()[0]]).name} shape, random "
                                                                 "weights" if backbones[name.split()[0]] else
                                                                 "backbone as configured") for name in predictors},
              "overhead": overhead(predictors, model, tokenizer, prompts)}
    del model
    if args.device == "cuda":
        torch.cuda.empty_cache()
    result["throughput"] = {}
    for name, predictor in predictors.items():
        one, many = throughput(predictor, prompts, 1), throughput(predictor, prompts, 32)
        result["throughput"][name] = {"batch_1": one, "batch_32": many, "speedup": many / one}
    report(result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "routing_overhead-gpu.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out / 'routing_overhead-gpu.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
