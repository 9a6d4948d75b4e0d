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


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU does bfloat16 matmuls natively (AMX or AVX512-BF16); False if unknown."""
    try:
        flags = open(cpuinfo).read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def engine_dtype(requested: str, gpu: bool) -> str:
    """The dtype an LLM engine loads its model in. `auto` keeps the checkpoint's own (bfloat16 for
    SmolLM2) on a GPU or on a CPU with native bf16; on any other CPU it becomes float32, because
    emulated bf16 is slow there: vLLM generated 5.4 tokens/s in bf16 against about 44 in float32 on
    this repo's 2-core build machine (docs/data.md). Checked on the machine that builds the engine's
    config; a cluster whose CPU nodes differ from the driver should pass --dtype explicitly."""
    if requested != "auto" or gpu or cpu_has_bf16():
        return requested
    return "float32"
