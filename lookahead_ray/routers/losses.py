"""Training losses shared by the routers.

Every router is trained with a binary cross-entropy per candidate (did candidate t answer
well?). The Lookahead routers add an auxiliary language-modelling loss on the response tokens:
masked-token prediction for Lookahead-MLM (weight 0.2), next-token prediction for
Lookahead-CLM (weight 0.5). Token targets use -100 for "no target here", as in PyTorch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


class LookaheadLoss(NamedTuple):
    """The total loss to back-propagate and its two parts, for logging."""

    total: torch.Tensor
    routing: torch.Tensor
    aux: torch.Tensor


def routing_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of routing logits (B, T) against labels (B, T) in {0, 1}.

    >>> round(routing_bce(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])).item(), 4)  # log 2
    0.6931
    """
    if logits.shape != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ in shape")
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


def masked_token_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the tokens whose target is not -100.

    `logits` is (..., V) and `targets` the same leading shape (...). With no target at all the
    loss is a zero that still belongs to the graph, so `backward()` works on any batch.

    >>> round(masked_token_ce(torch.zeros(1, 2, 4), torch.tensor([[3, -100]])).item(), 4)  # log 4
    1.3863
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match targets {tuple(targets.shape)}")
    flat_logits = logits.reshape(-1, logits.shape[-1])  # (N, V)
    flat_targets = targets.reshape(-1)  # (N,)
    if not (flat_targets != IGNORE_INDEX).any():
        return flat_logits.sum() * 0.0
    return F.cross_entropy(flat_logits.float(), flat_targets, ignore_index=IGNORE_INDEX)


def lookahead_loss(
    routing_logits: torch.Tensor,
    labels: torch.Tensor,
    token_logits: torch.Tensor,
    token_targets: torch.Tensor,
    aux_weight: float,
) -> LookaheadLoss:
    """BCE routing loss + aux_weight * token cross-entropy."""
    if aux_weight < 0:
        raise ValueError(f"aux_weight must be >= 0, got {aux_weight}")
    routing = routing_bce(routing_logits, labels)
    aux = masked_token_ce(token_logits, token_targets)
    return LookaheadLoss(routing + aux_weight * aux, routing, aux)


def lookahead_mlm_loss(
    routing_logits: torch.Tensor,
    labels: torch.Tensor,
    mlm_logits: torch.Tensor,
    mlm_targets: torch.Tensor,
    aux_weight: float = 0.2,
) -> LookaheadLoss:
    """Lookahead-MLM: BCE on (B, T) + 0.2 * masked-token CE on (B, S, V) vs (B, S)."""
    return lookahead_loss(routing_logits, labels, mlm_logits, mlm_targets, aux_weight)


def lookahead_clm_loss(
    routing_logits: torch.Tensor,
    labels: torch.Tensor,
    lm_logits: torch.Tensor,
    lm_targets: torch.Tensor,
    aux_weight: float = 0.5,
) -> LookaheadLoss:
    """Lookahead-CLM: BCE on (B, T) + 0.5 * response next-token CE.

    `lm_logits` (..., V) and `lm_targets` (...) are aligned already: the logit at a position
    is scored against the target stored at that same position (the collator shifts).
    """
    return lookahead_loss(routing_logits, labels, lm_logits, lm_targets, aux_weight)
