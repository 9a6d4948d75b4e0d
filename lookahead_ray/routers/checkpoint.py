"""The router checkpoint contract: `router.json` (what to rebuild) + `model.pt` (its weights) [+ train_state.pt].

Written by training (`save_router`), read by evaluation and serving (`load_router`, `read_spec`);
`ROUTERS` is the one table of router kinds.

Rebuilding reads the backbone again from its source (a local path or an alias resolved offline)
and then loads every weight, heads and added model-ID rows included, from `model.pt`.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from lookahead_ray.backbones import resolve
from lookahead_ray.routers.causal import LookaheadCLM
from lookahead_ray.routers.masked import LookaheadMLM
from lookahead_ray.routers.mlc import MLCRouter

SPEC_FILE = "router.json"
WEIGHTS_FILE = "model.pt"
STATE_FILE = "train_state.pt"


@dataclass(frozen=True)
class RouterSpec:
    """Everything needed to rebuild a trained router's module before loading its weights."""

    kind: str
    backbone: str
    candidates: tuple[str, ...]
    num_layers: int | None = None
    dropout: float = 0.1
    max_prompt_len: int = 128
    block_len: int = 64
    max_response_len: int = 64
    truncation_side: str = "right"
    """Which end of a long prompt the tokenizer cuts (checkpoints from before this field: right)."""
    id_token_noise: float = 0.1
    """Causal router: spread of the fresh model-ID token rows (see TrainConfig.id_token_noise); only a
    fresh router uses it, a checkpoint's own rows replace them (checkpoints from before this field: 0.1)."""
    routing_head: str = "shared"
    """Causal router: "shared" or "per_candidate" (see TrainConfig.routing_head; checkpoints from before
    this field: shared)."""

    @classmethod
    def from_train_config(cls, cfg) -> "RouterSpec":
        return cls(kind=cfg.router, backbone=cfg.backbone, candidates=tuple(cfg.data.candidates),
                   num_layers=cfg.num_layers, dropout=cfg.dropout, max_prompt_len=cfg.max_prompt_len,
                   block_len=cfg.block_len, max_response_len=cfg.max_response_len,
                   truncation_side=cfg.truncation_side, id_token_noise=cfg.id_token_noise,
                   routing_head=cfg.routing_head)


def build_router(spec: RouterSpec) -> torch.nn.Module:
    """A fresh router module for `spec` (pretrained backbone, new heads), its tokenizer cutting long
    prompts on `spec.truncation_side`."""
    with quiet_cut_load(spec.num_layers):
        model = _build(spec)
    if getattr(model, "tokenizer", None) is not None:
        model.tokenizer.truncation_side = spec.truncation_side
    return model


@contextmanager
def quiet_cut_load(num_layers: int | None):
    """Silence transformers' load report when the backbone is cut to its first `num_layers` layers:
    it would list every weight of the dropped layers as UNEXPECTED (about 30 lines a load), which is
    the intended outcome of the cut. An uncut load keeps the report (a missing weight matters there)."""
    from transformers.utils import logging as hf_logging  # heavy: transformers only when a backbone loads

    if num_layers is None:
        yield
        return
    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


def _mlc(source: str, spec: RouterSpec) -> torch.nn.Module:
    return MLCRouter.from_pretrained(source, len(spec.candidates), spec.num_layers, spec.dropout, spec.max_prompt_len)


def _masked(source: str, spec: RouterSpec) -> torch.nn.Module:
    return LookaheadMLM.from_pretrained(source, len(spec.candidates), spec.num_layers, spec.dropout, spec.block_len,
                                        spec.max_prompt_len)


def _causal(source: str, spec: RouterSpec) -> torch.nn.Module:
    return LookaheadCLM.from_pretrained(source, len(spec.candidates), spec.num_layers, spec.dropout,
                                        max_prompt_len=spec.max_prompt_len, max_response_len=spec.max_response_len,
                                        id_token_noise=spec.id_token_noise, routing_head=spec.routing_head)


ROUTERS = {"mlc": _mlc, "lookahead-mlm": _masked, "lookahead-clm": _causal}
"""Router kind -> builder of a fresh module: the one table every command, config check and loader reads
(the builders import their router module when called: the CLI starts without torch's model code)."""


def _build(spec: RouterSpec) -> torch.nn.Module:
    if spec.kind not in ROUTERS:
        raise ValueError(f"unknown router kind {spec.kind!r}; known: {sorted(ROUTERS)}")
    return ROUTERS[spec.kind](resolve(spec.backbone), spec)


def save_router(model: torch.nn.Module, spec: RouterSpec, directory: str | Path,
                train_state: dict[str, Any] | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SPEC_FILE).write_text(json.dumps(asdict(spec), indent=2) + "\n")
    torch.save(model.state_dict(), directory / WEIGHTS_FILE)
    if train_state is not None:
        torch.save(train_state, directory / STATE_FILE)
    return directory


def read_spec(directory: str | Path) -> RouterSpec:
    path = Path(directory) / SPEC_FILE
    try:
        values = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a router checkpoint ({err})") from err
    values["candidates"] = tuple(values["candidates"])
    return RouterSpec(**values)


def load_router(directory: str | Path) -> tuple[torch.nn.Module, RouterSpec]:
    """The trained router in eval mode, and its spec."""
    spec = read_spec(directory)
    model = build_router(spec)
    state = torch.load(Path(directory) / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval(), spec


def load_train_state(directory: str | Path) -> dict[str, Any] | None:
    path = Path(directory) / STATE_FILE
    return torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None
