"""Typed configuration. A YAML file is a serialised instance of `DataConfig`.

Every field has a docstring-style comment that doubles as help text. `__post_init__` raises on a
bad value instead of silently changing it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lookahead_ray.candidates import PAPER_CANDIDATES, CandidatePool


@dataclass(frozen=True)
class LabelConfig:
    """How raw candidate scores become per-prompt training targets (the paper's labels)."""

    positive_ratio: float = 0.8
    """y_t = 1[n_t >= positive_ratio * max_s n_s], on the min-max normalised scores n."""
    tie_tolerance: float = 0.0
    """Scores whose max - min is at most this count as all equal: they normalise to zeros."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.positive_ratio <= 1.0:
            raise ValueError(f"labels.positive_ratio must be in [0, 1], got {self.positive_ratio}")
        if self.tie_tolerance < 0.0:
            raise ValueError(f"labels.tie_tolerance must be >= 0, got {self.tie_tolerance}")


@dataclass(frozen=True)
class SplitConfig:
    """The replay protocol: a deterministic split of every test set by a hash of prompt_id."""

    train: float = 0.4
    """Share of each test benchmark's queries that routers may train on."""
    val: float = 0.2
    """Share used for model selection; the rest is test. 0.2 (was 0.1, with train 0.5): 14 HumanEval
    and 13 MBPP val rows could not rank routers. Test (hash >= train + val = 0.6) is unchanged."""
    salt: str = "lookahead-ray"
    """Changing the salt draws a different, equally deterministic split."""

    def __post_init__(self) -> None:
        if self.train < 0 or self.val < 0 or self.train + self.val >= 1.0:
            raise ValueError(
                f"split.train={self.train} and split.val={self.val} must be >= 0 and leave a test share"
            )


@dataclass(frozen=True)
class DataConfig:
    """Which candidates, which labels and which split the whole pipeline uses."""

    candidates: tuple[str, ...] = PAPER_CANDIDATES
    """Candidate LLM names, in order; the order of every score vector."""
    labels: LabelConfig = field(default_factory=LabelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)

    def __post_init__(self) -> None:
        CandidatePool(tuple(self.candidates))  # raises on an empty or duplicate pool

    @property
    def pool(self) -> CandidatePool:
        return CandidatePool(tuple(self.candidates))


def load_data_config(path: str | Path | None) -> DataConfig:
    """Read a DataConfig from YAML (the `data:` section if present); None gives the defaults."""
    if path is None:
        return DataConfig()
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read config: {err}") from err
    section = raw.get("data", raw) if isinstance(raw, dict) else raw
    return from_dict(DataConfig, section, str(path))


def to_dict(config: Any) -> dict[str, Any]:
    """A plain dict of a config (for YAML, MLflow params and manifests)."""
    out = dataclasses.asdict(config)
    if "candidates" in out:
        out["candidates"] = list(out["candidates"])
    return out


ROUTER_KINDS = ("mlc", "lookahead-mlm", "lookahead-clm")
CURRICULUM_SHAPES = ("linear", "cosine", "step")
MIXES = ("balanced", "fill", "equal", "natural")
ROUTING_HEADS = ("shared", "per_candidate")  # Lookahead-CLM's routing head (TrainConfig.routing_head)


@dataclass(frozen=True)
class CurriculumConfig:
    """The masked router's mask-rate schedule r(step) (see curriculum.mask_rate)."""

    r0: float = 0.3
    """Mask rate at step 0."""
    warmup_ratio: float = 0.2
    """Share of the optimizer steps over which r rises to 1."""
    shape: str = "linear"
    """linear | cosine | step."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.r0 <= 1.0:
            raise ValueError(f"curriculum.r0 must be in [0, 1], got {self.r0}")
        if not 0.0 < self.warmup_ratio <= 1.0:
            raise ValueError(f"curriculum.warmup_ratio must be in (0, 1], got {self.warmup_ratio}")
        if self.shape not in CURRICULUM_SHAPES:
            raise ValueError(f"curriculum.shape must be one of {CURRICULUM_SHAPES}, got {self.shape!r}")


@dataclass(frozen=True)
class TrainConfig:
    """One router training run on Ray Train (`lookahead-ray train --config FILE.yaml`)."""

    router: str = "lookahead-mlm"
    """mlc | lookahead-mlm | lookahead-clm."""
    dataset: str = "runs/release"
    """An imported routing dataset or a release folder."""
    backbone: str = "minilm"
    """HF id or local path; aliases `minilm` and `smollm2` load the packaged models offline."""
    num_layers: int | None = None
    """Keep only the first n backbone layers (a CPU run fits); None keeps all."""
    max_prompt_len: int = 128
    block_len: int = 64
    """Masked router: slots per candidate block, the last one [SEP]."""
    max_response_len: int = 64
    """Causal router: response tokens per training row."""
    aux_weight: float | None = None
    """Weight of the response loss; None gives the paper's 0.2 (masked) or 0.5 (causal)."""
    aux_ramp_ratio: float = 0.0
    """Share of optimizer steps over which the response-loss weight rises linearly from 0 to its
    full value (0: full weight from the first step). A causal router cut to a few layers starts with
    a response loss of ~17 nats against a routing BCE of ~0.7 (docs/recipes.md): the ramp lets the
    routing head move first."""
    id_token_noise: float = 0.1
    """Causal router: the new model-ID token rows start at the mean embedding row plus
    id_token_noise x (per-dimension std) x N(0, 1). At 0.1 the five rows start about a tenth of a
    row's norm apart, so at first the router can learn little beyond one bias per candidate; at 1.0
    each starts as a typical, distinct token (docs/recipes.md)."""
    routing_head: str = "shared"
    """Causal router: "shared", the paper's one Linear(hidden, 1) over every `<Model_t>` state (the
    candidates differ only through their ID rows), or "per_candidate", one weight row and bias per
    candidate (as MLC's output layer), which adds a query x candidate term from the first step."""
    dropout: float = 0.1
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_steps_ratio: float = 0.1
    """Share of optimizer steps of linear LR warmup before the cosine decay."""
    max_grad_norm: float = 1.0
    weight_ema: float = 0.0
    """Decay of an exponential moving average of the weights (torch.optim.swa_utils), 0 for none. When
    on, val scores, checkpoints and the served router use the averaged weights, and the raw weights
    train on. A CPU replay run evaluates every ~14 steps at a high learning rate, and its val score
    swings by up to 0.5 between evaluations (docs/recipes.md): averaging the last ~1/(1 - decay)
    steps smooths that out at no extra training cost."""
    batch_size: int = 8
    """Examples per worker per micro-batch."""
    grad_accum: int = 1
    epochs: int = 1
    max_steps: int | None = None
    """Stop after this many optimizer steps (None: the epochs decide)."""
    eval_every: int = 50
    """Evaluate on val, report to Ray Train and checkpoint every n optimizer steps (and at the end)."""
    max_train_samples: int | None = None
    max_val_samples: int | None = None
    benchmarks: tuple[str, ...] | None = None
    """Train on these benchmarks' rows only (None: every set in the dataset)."""
    drop_tied: bool = True
    """Leave out train rows on which every candidate scores the same: all their labels are 1, so
    they carry no routing signal and only pull a router towards the label prior."""
    mix: str = "balanced"
    """How the train sample is drawn from its sources (benchmarks): `balanced` gives every source at
    most an equal share of max_train_samples (a smaller source gives all its rows; the sample then
    shrinks rather than fill up from the big sources), `fill` shares that shortfall out among the
    others, `equal` gives every source its full share and repeats a smaller source's rows (drawn
    with replacement), `natural` samples in proportion to the sources' sizes. The release's pool is 59 % SelfOSS
    code: drawn naturally, "always the best coder" is the BCE optimum."""
    source_weights: dict[str, float] | None = None
    """Relative share per source on top of `mix` (sources not named keep weight 1; 0 leaves one out)."""
    source_caps: dict[str, int] | None = None
    """At most this many train rows of a source."""
    val_sets: tuple[str, ...] | None = None
    """Benchmarks whose val rows select the model (`val_score`); None: every test benchmark with val
    rows. Training-only sets (SelfOSS) are then reported as `trainset_val_reward` but do not select."""
    max_val_per_set: int | None = None
    """At most this many val rows per selecting benchmark (a seeded sample); None keeps all."""
    min_evals: int = 10
    """A run evaluates at least this many times: eval_every is lowered to steps // min_evals if needed."""
    head_warmup_steps: int = 0
    """Masked router: optimizer steps that fit the MLM head alone (backbone frozen, no routing loss)
    before training starts. A sentence-embedding backbone such as all-MiniLM-L6-v2 ships no MLM
    head: without this, the first auxiliary gradients fit a random projection."""
    head_warmup_lr: float = 1e-3
    """Learning rate of the head warm-up (a fresh head tolerates a larger step than the backbone)."""
    truncation_side: str = "right"
    """Which end of a long prompt is cut: `left` keeps the end of the prompt (the paper's recipe)."""
    cpu_autocast: bool = False
    """bf16 autocast for training and scoring on the CPU (AMX / avx512_bf16); see benchmarks/train_precision.py."""
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    max_failures: int = 2
    """Worker crashes survived by resuming from the last checkpoint."""
    seed: int = 0
    storage_path: str = "runs/train"
    name: str | None = None
    experiment: str = "lookahead-ray-train"
    register_as: str | None = "lookahead-router"
    """MLflow Model Registry name of the best checkpoint (None: do not register)."""
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        if self.router not in ROUTER_KINDS:
            raise ValueError(f"router must be one of {ROUTER_KINDS}, got {self.router!r}")
        for name in ("batch_size", "grad_accum", "epochs", "eval_every", "num_workers", "max_prompt_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.block_len < 2:
            raise ValueError(f"block_len must be >= 2 (a response slot and [SEP]), got {self.block_len}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or null, got {self.max_steps}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup_steps_ratio < 1.0:
            raise ValueError(f"warmup_steps_ratio must be in [0, 1), got {self.warmup_steps_ratio}")
        if self.id_token_noise < 0:
            raise ValueError(f"id_token_noise must be >= 0, got {self.id_token_noise}")
        if self.routing_head not in ROUTING_HEADS:
            raise ValueError(f"routing_head must be one of {ROUTING_HEADS}, got {self.routing_head!r}")
        if not 0.0 <= self.weight_ema < 1.0:
            raise ValueError(f"weight_ema must be in [0, 1) (0: off), got {self.weight_ema}")
        if not 0.0 <= self.aux_ramp_ratio <= 1.0:
            raise ValueError(f"aux_ramp_ratio must be in [0, 1], got {self.aux_ramp_ratio}")
        if self.mix not in MIXES:
            raise ValueError(f"mix must be one of {MIXES}, got {self.mix!r}")
        if self.truncation_side not in ("left", "right"):
            raise ValueError(f"truncation_side must be 'left' or 'right', got {self.truncation_side!r}")
        for name, table in (("source_weights", self.source_weights), ("source_caps", self.source_caps)):
            for source, value in (table or {}).items():
                if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                    raise ValueError(f"{name}.{source} must be a number >= 0, got {value!r}")
        if self.min_evals < 1 or self.head_warmup_steps < 0:
            raise ValueError(f"min_evals must be >= 1 and head_warmup_steps >= 0, got "
                             f"{self.min_evals} and {self.head_warmup_steps}")
        if self.max_val_per_set is not None and self.max_val_per_set < 1:
            raise ValueError(f"max_val_per_set must be >= 1 or null, got {self.max_val_per_set}")

    def evaluation_interval(self, steps: int) -> int:
        """eval_every, lowered so that a run of `steps` optimizer steps evaluates >= min_evals times.

        >>> TrainConfig(eval_every=50, min_evals=10).evaluation_interval(150)
        15
        """
        return max(1, min(self.eval_every, steps // self.min_evals))

    def aux_weight_at(self, step: int, steps: int) -> float:
        """The response-loss weight at optimizer step `step` of `steps` (the ramp of aux_ramp_ratio).

        >>> TrainConfig(router="lookahead-clm", aux_ramp_ratio=0.5).aux_weight_at(25, 100)
        0.25
        """
        ramp = self.aux_ramp_ratio * steps
        return self.response_loss_weight * (min(1.0, step / ramp) if ramp > 0 else 1.0)

    @property
    def response_loss_weight(self) -> float:
        if self.aux_weight is not None:
            return self.aux_weight
        return {"lookahead-mlm": 0.2, "lookahead-clm": 0.5}.get(self.router, 0.0)


_NESTED = {
    DataConfig: {"labels": LabelConfig, "split": SplitConfig},
    TrainConfig: {"curriculum": CurriculumConfig, "data": DataConfig},
}


def from_dict(cls: type, values: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass `cls` from a mapping, nested sections included; unknown keys are errors."""
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        nested = _NESTED.get(cls, {}).get(name)
        if nested is not None:
            kwargs[name] = from_dict(nested, value, f"{where}.{name}")
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def load_train_config(path: str | Path | None, **overrides: Any) -> TrainConfig:
    """A TrainConfig from YAML (None: defaults), with command-line overrides applied on top."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ValueError(f"{path}: cannot read config: {err}") from err
    values.update({k: v for k, v in overrides.items() if v is not None})
    data = values.get("data")
    if not (isinstance(data, dict) and "candidates" in data):
        stored = dataset_candidates(values.get("dataset", TrainConfig.dataset))
        if stored:  # a generated dataset names its own pool: train for it, in its order
            values["data"] = {**(data if isinstance(data, dict) else {}), "candidates": stored}
    return from_dict(TrainConfig, values, str(path or "config"))


def dataset_candidates(dataset: str | Path) -> list[str] | None:
    """The candidates an imported or generated dataset's manifest lists; None for a release folder."""
    # Read here rather than through data/schema.py: config sits below data in the layers. A dataset
    # at a storage URI is not read here; its config names the pool (`data: {candidates: [...]}`).
    manifest = Path(str(dataset)) / "manifest.json"
    if "://" in str(dataset) or not manifest.is_file():
        return None
    try:
        return list(json.loads(manifest.read_text()).get("candidates") or []) or None
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{manifest}: cannot read the manifest: {err}") from err


ENGINES = ("vllm", "hf")


@dataclass(frozen=True)
class SamplingConfig:
    """Decoding settings of one candidate (vLLM SamplingParams / HF generate)."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"sampling.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"sampling.top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"sampling.max_tokens must be >= 1, got {self.max_tokens}")


@dataclass(frozen=True)
class CandidateSpec:
    """One candidate LLM of a pool: where its weights are, how it decodes, what it costs."""

    name: str
    model: str
    """HF id, local path, or an alias of lookahead_ray.backbones (`smollm2`)."""
    engine: str = "vllm"
    """vllm (ray.data.llm / ray.serve.llm) or hf (transformers), when vllm is not installed."""
    system_prompt: str | None = None
    chat_template: bool = True
    """Wrap prompts in the tokenizer's chat template."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    cost_per_1k_input: float = 0.0
    cost_per_1k_output: float = 0.0
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    tensor_parallel_size: int = 1

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("candidate: field 'name' is empty")
        if self.engine not in ENGINES:
            raise ValueError(f"candidate {self.name!r}: engine must be one of {ENGINES}, got {self.engine!r}")
        if self.cost_per_1k_input < 0 or self.cost_per_1k_output < 0:
            raise ValueError(f"candidate {self.name!r}: costs must be >= 0")
        if self.tensor_parallel_size < 1:
            raise ValueError(f"candidate {self.name!r}: tensor_parallel_size must be >= 1")


@dataclass(frozen=True)
class PoolConfig:
    """The candidate pool shared by generation, training (its order) and serving."""

    candidates: tuple[CandidateSpec, ...]

    def __post_init__(self) -> None:
        CandidatePool(tuple(c.name for c in self.candidates))  # non-empty, no duplicates

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.candidates)

    def get(self, name: str) -> CandidateSpec:
        return self.candidates[CandidatePool(self.names).index(name)]


_NESTED[CandidateSpec] = {"sampling": SamplingConfig}


def load_pool(path: str | Path) -> PoolConfig:
    """A PoolConfig from YAML: `candidates: [{name, model, engine, sampling: {...}, ...}, ...]`."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read pool: {err}") from err
    if not isinstance(raw, dict) or not isinstance(raw.get("candidates"), list):
        raise ValueError(f"{path}: expected a mapping with a 'candidates' list")
    specs = tuple(from_dict(CandidateSpec, c, f"{path}: candidates[{i}]") for i, c in enumerate(raw["candidates"]))
    return PoolConfig(specs)
