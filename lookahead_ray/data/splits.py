"""Deterministic train/val/test assignment by a hash of the prompt id (the replay protocol)."""

from __future__ import annotations

import hashlib

from lookahead_ray.config import SplitConfig


def hash_unit(benchmark: str, prompt_id: str, salt: str) -> float:
    """A number in [0, 1) fixed by (salt, benchmark, prompt_id) alone, on every machine.

    >>> hash_unit("GSM8K", "7", "s") == hash_unit("GSM8K", "7", "s")
    True
    """
    digest = hashlib.sha256(f"{salt}\x00{benchmark}\x00{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(benchmark: str, prompt_id: str, config: SplitConfig) -> str:
    """'train', 'val' or 'test' for a query of a test benchmark."""
    u = hash_unit(benchmark, prompt_id, config.salt)
    if u < config.train:
        return "train"
    if u < config.train + config.val:
        return "val"
    return "test"
