"""Typed configuration. A YAML file is a serialised instance of `DataConfig`.

Every field has a docstring-style comment that doubles as help text. `__post_init__` raises on a
bad value instead of silently changing it.
"""

from __future__ import annotations

import dataclasses
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

    train: float = 0.5
    """Share of each test benchmark's queries that routers may train on."""
    val: float = 0.1
    """Share used for model selection; the rest is test."""
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


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        nested = {"labels": LabelConfig, "split": SplitConfig}.get(name) if cls is DataConfig else None
        if nested is not None:
            kwargs[name] = _build(nested, value, f"{where}.{name}")
        elif name == "candidates":
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


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
    return _build(DataConfig, section, str(path))


def to_dict(config: Any) -> dict[str, Any]:
    """A plain dict of a config (for YAML, MLflow params and manifests)."""
    out = dataclasses.asdict(config)
    if "candidates" in out:
        out["candidates"] = list(out["candidates"])
    return out
