"""The mask-rate curriculum of Lookahead-MLM: a pure function of the optimizer step.

Training starts with a fraction `r0` of each response block hidden and raises it to 1 over the
first `warmup_ratio` of the run, after which the router sees no response token at all, exactly
as at evaluation time. The collator never counts steps: the training loop computes the rate
from its optimizer step and passes it in.

>>> [round(mask_rate(step, 100), 4) for step in (0, 10, 20, 90)]
[0.3, 0.65, 1.0, 1.0]
"""

from __future__ import annotations

import math

SHAPES = ("linear", "cosine", "step")


def mask_rate(
    step: int,
    total_steps: int,
    r0: float = 0.3,
    warmup_ratio: float = 0.2,
    shape: str = "linear",
) -> float:
    """The fraction of response tokens to hide at optimizer step `step` of `total_steps`.

    The warmup lasts `warmup_ratio * total_steps` steps (rounded to 9 decimals, so that
    0.7 * 10 is 7 and not 7.000000000000001); from its last step on the rate is 1.
    - "linear": r0 + (1 - r0) * progress, progress = step / warmup_steps, capped at 1.
    - "cosine": r0 + (1 - r0) * (1 - cos(pi * progress)) / 2: slow start, slow finish.
    - "step":   r0 for every step before the warmup ends, then 1 (a single jump, no stages).

    >>> round(mask_rate(5, 100, r0=0.0, warmup_ratio=0.1, shape="cosine"), 4)
    0.5
    >>> mask_rate(9, 100, warmup_ratio=0.1, shape="step"), mask_rate(10, 100, warmup_ratio=0.1, shape="step")
    (0.3, 1.0)
    """
    _check_arguments(step, total_steps, r0, warmup_ratio, shape)
    warmup_steps = max(round(warmup_ratio * total_steps, 9), 1e-9)
    progress = min(step / warmup_steps, 1.0)
    if shape == "linear":
        rise = progress
    elif shape == "cosine":
        rise = (1.0 - math.cos(math.pi * progress)) / 2.0
    else:  # "step"
        rise = 1.0 if progress >= 1.0 else 0.0
    return min(r0 + (1.0 - r0) * rise, 1.0)


def _check_arguments(step: int, total_steps: int, r0: float, warmup_ratio: float, shape: str) -> None:
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    if not 0.0 <= r0 <= 1.0:
        raise ValueError(f"r0 must be in [0, 1], got {r0}")
    if not 0.0 < warmup_ratio <= 1.0:
        raise ValueError(f"warmup_ratio must be in (0, 1], got {warmup_ratio}")
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
