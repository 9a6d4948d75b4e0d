"""The router interface and the routing rule shared by every router.

A router implements one method, `score(batch) -> Tensor[B, T]`: a higher score means the router
expects that candidate to answer better. Which candidate then answers (argmax, or argmax after a
cost penalty) is decided here, once, for evaluation and serving alike.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import torch


class Router(Protocol):
    """Anything with `score(batch) -> Tensor[B, T]` over the pool's T candidates."""

    def score(self, batch: dict[str, Any]) -> torch.Tensor: ...


def route(scores: torch.Tensor, costs: Sequence[float] | None = None, cost_weight: float = 0.0) -> torch.Tensor:
    """Pick one candidate per row: argmax of quality - cost_weight * normalised cost.

    `scores` is (B, T). Costs are min-max normalised over the pool, so `cost_weight` in [0, 1]
    trades at most one unit of predicted quality for going from the cheapest to the dearest
    candidate. Ties go to the lower index.

    >>> route(torch.tensor([[0.9, 0.8], [0.1, 0.7]])).tolist()
    [0, 1]
    >>> route(torch.tensor([[0.9, 0.8]]), costs=[10.0, 1.0], cost_weight=0.5).tolist()
    [1]
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be (B, T), got shape {tuple(scores.shape)}")
    if not 0.0 <= cost_weight <= 1.0:
        raise ValueError(f"cost_weight must be in [0, 1], got {cost_weight}")
    if costs is None or cost_weight == 0.0:
        return scores.argmax(dim=1)
    cost = torch.as_tensor(costs, dtype=scores.dtype)
    if cost.shape != (scores.shape[1],):
        raise ValueError(f"{len(costs)} costs for {scores.shape[1]} candidates")
    spread = cost.max() - cost.min()
    normalised = (cost - cost.min()) / spread if spread > 0 else torch.zeros_like(cost)
    return (scores - cost_weight * normalised).argmax(dim=1)  # (B,)
