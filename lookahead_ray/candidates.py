"""The candidate pool: name <-> index <-> model-ID token, in one place.

The order of the pool is the order of every score vector, label vector and router output
column in the project. It comes from config; the default is the paper's five candidates in the
paper's order.
"""

from __future__ import annotations

from dataclasses import dataclass

PAPER_CANDIDATES: tuple[str, ...] = (
    "Yi-1.5-34B-Chat",
    "internlm2_5-20b-chat",
    "Phi-3-medium-4k-instruct",
    "Llama-3.1-8B-Instruct",
    "Qwen2.5-Coder-7B-Instruct",
)


@dataclass(frozen=True)
class CandidatePool:
    """An ordered, duplicate-free list of candidate LLM names.

    >>> pool = CandidatePool(("a", "b"))
    >>> pool.index("b"), pool.name(0), pool.model_token(1), len(pool)
    (1, 'a', '<Model_1>', 2)
    """

    names: tuple[str, ...] = PAPER_CANDIDATES

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("candidates: the pool is empty; name at least one candidate")
        duplicates = sorted({n for n in self.names if self.names.count(n) > 1})
        if duplicates:
            raise ValueError(f"candidates: duplicate names {duplicates}")

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"unknown candidate {name!r}; the pool is {list(self.names)}") from None

    def name(self, index: int) -> str:
        return self.names[index]

    def model_token(self, index: int) -> str:
        """The model-ID token of candidate `index` for the causal router's vocabulary."""
        if not 0 <= index < len(self.names):
            raise IndexError(f"candidate index {index} outside 0..{len(self.names) - 1}")
        return f"<Model_{index}>"
