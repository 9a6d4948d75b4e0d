"""Load a router checkpoint (a folder, or an MLflow registry URI) and score prompts. No Ray inside.

Used by evaluation, tuning, the MLflow pyfunc model and the Serve router deployment alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lookahead_ray.routers.base import route
from lookahead_ray.routers.checkpoint import load_router


PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def pick_device(device: str) -> torch.device:
    """"auto": the first CUDA device when torch sees one, else the CPU; otherwise `device` as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: torch sees no CUDA device")
    return torch.device(device)


class RouterPredictor:
    """`score(prompts) -> (B, T)` logits of a trained router, and `route()` with the cost knob."""

    def __init__(self, model: torch.nn.Module, candidates: Sequence[str], batch_size: int = 16,
                 device: str = "auto", precision: str = "float32") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.device = pick_device(device)
        self.model = model.to(self.device, PRECISIONS[precision]).eval()
        self.candidates = list(candidates)
        self.batch_size = batch_size

    @classmethod
    def load(cls, source: str, batch_size: int = 16, device: str = "auto",
             precision: str = "float32") -> "RouterPredictor":
        """From a local checkpoint folder (`registry.resolve_checkpoint` turns a models:/ URI into one)."""
        model, spec = load_router(source)
        return cls(model, spec.candidates, batch_size, device, precision)

    def score(self, batch: dict[str, Any]) -> torch.Tensor:
        """The Router interface: a batch with a "prompt" list -> (B, T), float32 on the CPU."""
        prompts = list(batch["prompt"])
        parts = [self.model.score({"prompt": prompts[i : i + self.batch_size]})
                 for i in range(0, len(prompts), self.batch_size)]
        return torch.cat(parts).float() if parts else torch.zeros(0, len(self.candidates))

    def route(self, prompts: Sequence[str], costs: Sequence[float] | None = None,
              cost_weight: float = 0.0) -> tuple[list[str], np.ndarray]:
        scores = self.score({"prompt": list(prompts)})
        picks = route(scores, costs, cost_weight)
        return [self.candidates[i] for i in picks.tolist()], scores.numpy()
