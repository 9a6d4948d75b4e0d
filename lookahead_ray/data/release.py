"""Importer for the public Lookahead release layout (`compressed_data/...`).

Each reader turns one set of the release into rows of the routing-dataset schema (see
schema.py) for the configured candidates, in the configured order. Files may be gzipped
(`x.json.gz`, as released) or plain (`x.json`). Errors name the file and the field at fault;
an absent optional set is skipped with one warning line; nothing yields zero rows silently.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd

from lookahead_ray.config import DataConfig
from lookahead_ray.data.schema import COLUMNS, TEST_BENCHMARKS, TRAINING_SETS, check_rows
from lookahead_ray.data.splits import assign_split

log = logging.getLogger(__name__)


class ReleaseFormatError(ValueError):
    """A release file is missing or does not have the expected fields."""


# --- file access -----------------------------------------------------------------------------


def _resolve(path: Path) -> Path | None:
    """`path` itself or its gzipped twin, whichever exists."""
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _read_text(path: Path) -> tuple[Path, str]:
    found = _resolve(path)
    if found is None:
        raise ReleaseFormatError(f"{path}[.gz]: file not found")
    try:
        if found.suffix == ".gz":
            with gzip.open(found, "rt", encoding="utf-8") as handle:
                return found, handle.read()
        return found, found.read_text(encoding="utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise ReleaseFormatError(f"{found}: cannot read: {err}") from err


def load_json(path: Path) -> tuple[Path, Any]:
    found, text = _read_text(path)
    try:
        return found, json.loads(text)
    except json.JSONDecodeError as err:
        raise ReleaseFormatError(f"{found}: not valid JSON ({err})") from err


def load_jsonl(path: Path) -> tuple[Path, list[dict[str, Any]]]:
    found, text = _read_text(path)
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ReleaseFormatError(f"{found}: line {number}: not valid JSON ({err})") from err
        if not isinstance(record, dict):
            raise ReleaseFormatError(f"{found}: line {number}: expected a JSON object")
        records.append(record)
    if not records:
        raise ReleaseFormatError(f"{found}: no records")
    return found, records


def field(record: Any, name: str, file: Path, where: str) -> Any:
    """`record[name]`, or an error naming the file, the record and the field."""
    if not isinstance(record, dict) or name not in record:
        raise ReleaseFormatError(f"{file}: {where}: missing field {name!r}")
    return record[name]


def number(value: Any, file: Path, where: str, name: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return float(value.strip().lower() == "true")
    raise ReleaseFormatError(f"{file}: {where}: field {name!r} is not a number ({value!r})")


def first_prompt(value: Any, file: Path, where: str, name: str) -> str:
    """The text of an OpenCompass prompt: a string, or [{'role': 'HUMAN', 'prompt': ...}]."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[0], dict) and "prompt" in value[0]:
        return str(value[0]["prompt"])
    raise ReleaseFormatError(f"{file}: {where}: field {name!r} has no prompt text")


def _candidate_file(directory: Path, name: str, suffix: str, candidate: str) -> Path:
    path = directory / f"{name}{suffix}"
    if _resolve(path) is None:
        raise ReleaseFormatError(f"candidate {candidate!r} has no file: expected {path}[.gz]")
    return path


# --- readers: each yields (prompt_id, prompt, responses, scores, aux) ----------------------


Row = tuple[str, str, list[str], list[float], dict[str, Any] | None]


def read_training_set(directory: Path, candidates: tuple[str, ...]) -> Iterator[Row]:
    """instructions.jsonl + responses/<model>.jsonl (SelfOSSInstruct, UltraFeedback, OpenMath)."""
    paths = [_candidate_file(directory / "responses", c, ".jsonl", c) for c in candidates]
    file, instructions = load_jsonl(directory / "instructions.jsonl")
    by_model = []
    for path in paths:
        found, records = load_jsonl(path)
        by_id = {}
        for number_, record in enumerate(records, start=1):
            where = f"line {number_}"
            by_id[str(field(record, "prompt_id", found, where))] = (found, where, record)
        by_model.append(by_id)
    for number_, instruction in enumerate(instructions, start=1):
        where = f"line {number_}"
        prompt_id = str(field(instruction, "prompt_id", file, where))
        prompt = instruction.get("prompt", instruction.get("instruction"))
        if not isinstance(prompt, str):
            raise ReleaseFormatError(f"{file}: {where}: missing field 'prompt'")
        responses, scores = [], []
        for by_id, candidate in zip(by_model, candidates):
            if prompt_id not in by_id:
                raise ReleaseFormatError(f"{paths[len(responses)]}: no response for prompt_id {prompt_id!r} ({candidate})")
            found, rwhere, record = by_id[prompt_id]
            responses.append(str(field(record, "response", found, rwhere)))
            scores.append(number(field(record, "score", found, rwhere), found, rwhere, "score"))
        yield prompt_id, prompt.strip(), responses, scores, None


def read_opencompass(directory: Path, candidates: tuple[str, ...]) -> Iterator[Row]:
    """GSM8k / MATH: <model>.json with OpenCompass `details` keyed by (non-contiguous) query index."""
    paths = [_candidate_file(directory, c, ".json", c) for c in candidates]
    details = []
    for path in paths:
        found, data = load_json(path)
        details.append((found, field(data, "details", found, "top level")))
    first_file, first = details[0]
    for key, item in first.items():
        where = f"details[{key!r}]"
        prompt = first_prompt(field(item, "prompt", first_file, where), first_file, where, "prompt")
        responses, scores = [], []
        for found, detail in details:
            record = detail.get(key)
            if record is None:
                raise ReleaseFormatError(f"{found}: missing {where} (present in {first_file.name})")
            responses.append(str(field(record, "origin_prediction", found, where)))
            scores.append(number(field(record, "correct", found, where), found, where, "correct"))
        yield str(key), prompt.strip(), responses, scores, None


def read_code_benchmark(directory: Path, candidates: tuple[str, ...]) -> Iterator[Row]:
    """HumanEval / MBPP: predictions/<model>.json (prompt, raw prediction) + results/<model>.json."""
    pred_paths = [_candidate_file(directory / "predictions", c, ".json", c) for c in candidates]
    result_paths = [_candidate_file(directory / "results", c, ".json", c) for c in candidates]
    predictions = [load_json(p) for p in pred_paths]
    results = []
    for path in result_paths:
        found, data = load_json(path)
        results.append((found, field(data, "details", found, "top level")))
    first_file, first = predictions[0]
    if not isinstance(first, dict) or not first:
        raise ReleaseFormatError(f"{first_file}: expected a non-empty mapping of query index to prediction")
    for key, item in first.items():
        where = f"[{key!r}]"
        prompt = first_prompt(field(item, "origin_prompt", first_file, where), first_file, where, "origin_prompt")
        responses, scores = [], []
        for (pfile, pred), (rfile, result) in zip(predictions, results):
            if key not in pred:
                raise ReleaseFormatError(f"{pfile}: missing {where} (present in {first_file.name})")
            if key not in result:
                raise ReleaseFormatError(f"{rfile}: missing details{where} (present in {first_file.name})")
            responses.append(str(field(pred[key], "prediction", pfile, where)))
            rwhere = f"details{where}"
            scores.append(number(field(result[key], "is_correct", rfile, rwhere), rfile, rwhere, "is_correct"))
        yield str(key), prompt.strip(), responses, scores, None


_ANSWER = re.compile(r"\[The Start of Assistant's Answer\]\n(.*?)\n\[The End of Assistant's Answer\]", re.S)


NO_GRADE = -1.0
"""FastChat's grade when the judge gave no parseable rating; like FastChat, we leave it out."""


def read_mtbench(directory: Path, candidates: tuple[str, ...]) -> Iterator[Row]:
    """MT-Bench: turn-1 prompt; score = mean of the two turns' GPT-4 grades (1-10).

    A turn graded -1 (the judge's rating could not be parsed) is left out of the mean, as
    FastChat's `show_result` drops it; `aux.turn_scores` keeps the raw grades.
    """
    judgment_dir = directory / "judgments"
    files = []
    for candidate in candidates:
        matches = sorted({p.name.removesuffix(".gz") for p in judgment_dir.glob(f"*_judge_{candidate}_single.jsonl*")})
        if not matches:
            raise ReleaseFormatError(
                f"candidate {candidate!r} has no file: expected {judgment_dir}/*_judge_{candidate}_single.jsonl[.gz]"
            )
        if len(matches) > 1:
            raise ReleaseFormatError(f"{judgment_dir}: several judges graded candidate {candidate!r}: {matches}; keep one")
        files.append(judgment_dir / matches[0])
    qfile, questions = load_jsonl(directory / "question.jsonl")
    grades = []  # per candidate: {(question_id, turn): (grade, judge prompt)}
    for path in files:
        found, records = load_jsonl(path)
        table = {}
        for number_, record in enumerate(records, start=1):
            where = f"line {number_}"
            qid = str(field(record, "question_id", found, where))
            turn = int(number(field(record, "turn", found, where), found, where, "turn"))
            grade = number(field(record, "score", found, where), found, where, "score")
            table[(qid, turn)] = (grade, field(record, "user_prompt", found, where))
        grades.append((found, table))
    for number_, question in enumerate(questions, start=1):
        where = f"line {number_}"
        qid = str(field(question, "question_id", qfile, where))
        turns = field(question, "turns", qfile, where)
        if not isinstance(turns, list) or not turns:
            raise ReleaseFormatError(f"{qfile}: {where}: field 'turns' must be a non-empty list")
        responses, scores, turn_scores = [], [], []
        for found, table in grades:
            missing = [t for t in (1, 2) if (qid, t) not in table]
            if missing:
                raise ReleaseFormatError(f"{found}: no judgment for question_id {qid} turn {missing[0]}")
            answer = _ANSWER.search(str(table[(qid, 1)][1]))
            if answer is None:
                raise ReleaseFormatError(f"{found}: question_id {qid} turn 1: field 'user_prompt' holds no answer")
            responses.append(answer.group(1))
            pair = [table[(qid, 1)][0], table[(qid, 2)][0]]
            graded = [g for g in pair if g != NO_GRADE]
            if not graded:
                raise ReleaseFormatError(f"{found}: question_id {qid}: field 'score' is {NO_GRADE} (no grade) for both turns")
            turn_scores.append(pair)
            scores.append(sum(graded) / len(graded))
        aux = {"turn_scores": turn_scores, "category": question.get("category")}
        yield qid, str(turns[0]).strip(), responses, scores, aux


def read_alpacaeval(directory: Path, candidates: tuple[str, ...]) -> Iterator[Row]:
    """AlpacaEval 2: score = weighted GPT-4-turbo preference (1..2) over the reference output."""
    paths = [
        _candidate_file(directory / c / "weighted_alpaca_eval_gpt4_turbo", "annotations", ".json", c)
        for c in candidates
    ]
    ifile, instructions = load_jsonl(directory / "instructions.jsonl")
    annotations = []
    for path in paths:
        found, records = load_json(path)
        if not isinstance(records, list):
            raise ReleaseFormatError(f"{found}: expected a list of annotations")
        by_instruction = {}
        for index, record in enumerate(records):
            by_instruction.setdefault(str(field(record, "instruction", found, f"[{index}]")), (index, record))
        annotations.append((found, by_instruction))
    for index, instruction in enumerate(instructions):
        where = f"line {index + 1}"
        text = str(field(instruction, "instruction", ifile, where))
        responses, scores = [], []
        for found, by_instruction in annotations:
            if text not in by_instruction:
                raise ReleaseFormatError(f"{found}: no annotation for instruction {text[:60]!r} ({ifile.name} {where})")
            aindex, record = by_instruction[text]
            awhere = f"[{aindex}]"
            responses.append(str(field(record, "output_2", found, awhere)))
            scores.append(number(field(record, "preference", found, awhere), found, awhere, "preference"))
        yield f"alpacaeval-{index}", text.strip(), responses, scores, None


ARENA_POINTS = {"A>>B": 3, "A>B": 1, "A=B": 0, "B>A": -1, "B>>A": -3}


def arena_score(games: list[str | None]) -> float:
    """Per-question score of a model vs the baseline from its two judge games, in [-6, 6].

    Game 1 has the baseline as A, game 2 has the model as A (the release's convention); a missing
    verdict counts as the strongest loss.

    >>> arena_score(["B>A", "A=B"]), arena_score(["A>>B", "B>A"]), arena_score([None, "A>B"])
    (1.0, -4.0, -6.0)
    """
    first, second = games
    if first is None or second is None:
        return -6.0
    return float(ARENA_POINTS[second] - ARENA_POINTS[first])


def read_arenahard(directory: Path, candidates: tuple[str, ...]) -> Iterator[Row]:
    """Arena-Hard v0.1: pairwise GPT-4 judgments vs gpt-4-0314; a question some candidate has no
    judgment for is skipped with a warning."""
    answer_paths = [_candidate_file(directory / "model_answer", c, ".jsonl", c) for c in candidates]
    judgment_paths = [_candidate_file(directory / "model_judgment", c, ".jsonl", c) for c in candidates]
    qfile, questions = load_jsonl(directory / "question.jsonl")
    answers, judgments = [], []
    for path in answer_paths:
        found, records = load_jsonl(path)
        table = {}
        for n, record in enumerate(records, start=1):
            where = f"line {n}"
            choices = field(record, "choices", found, where)
            try:
                table[str(field(record, "question_id", found, where))] = str(choices[0]["turns"][0]["content"])
            except (IndexError, KeyError, TypeError):
                raise ReleaseFormatError(f"{found}: {where}: field 'choices[0].turns[0].content' missing") from None
        answers.append((found, table))
    for path in judgment_paths:
        found, records = load_jsonl(path)
        table = {}
        for n, record in enumerate(records, start=1):
            where = f"line {n}"
            games = field(record, "games", found, where)
            if not isinstance(games, list) or len(games) != 2:
                raise ReleaseFormatError(f"{found}: {where}: field 'games' must hold two games")
            verdicts = [game.get("score") if isinstance(game, dict) else None for game in games]
            bad = [v for v in verdicts if v is not None and v not in ARENA_POINTS]
            if bad:
                raise ReleaseFormatError(f"{found}: {where}: field 'games[].score' has unknown verdict {bad[0]!r}")
            table[str(field(record, "question_id", found, where))] = verdicts
        judgments.append((found, table))
    for n, question in enumerate(questions, start=1):
        where = f"line {n}"
        qid = str(field(question, "question_id", qfile, where))
        try:
            prompt = str(field(question, "turns", qfile, where)[0]["content"])
        except (IndexError, KeyError, TypeError):
            raise ReleaseFormatError(f"{qfile}: {where}: field 'turns[0].content' missing") from None
        lacking = [f.name for f, table in judgments if qid not in table] + [f.name for f, t in answers if qid not in t]
        if lacking:
            log.warning("ArenaHard: skipping question %s: no answer or judgment in %s", qid, ", ".join(lacking))
            continue
        games = [table[qid] for _, table in judgments]
        responses = [table[qid] for _, table in answers]
        yield qid, prompt.strip(), responses, [arena_score(g) for g in games], {"games": games}


# --- the importer ----------------------------------------------------------------------------

Reader = Callable[[Path, tuple[str, ...]], Iterator[Row]]

# benchmark key -> (folder under compressed_data, reader)
TEST_SETS: dict[str, tuple[str, Reader]] = {
    "GSM8K": ("test/GSM8k", read_opencompass),
    "MATH": ("test/MATH", read_opencompass),
    "HumanEval": ("test/HumanEval", read_code_benchmark),
    "MBPP": ("test/MBPP", read_code_benchmark),
    "MT-Bench": ("test/MT-Bench", read_mtbench),
    "AlpacaEval": ("test/AlpacaEval", read_alpacaeval),
    "ArenaHard": ("test/ArenaHard", read_arenahard),
}
assert tuple(TEST_SETS) == TEST_BENCHMARKS


def release_root(path: str | Path) -> Path:
    """The `compressed_data` folder of a release clone (or the folder itself)."""
    path = Path(path)
    for root in (path / "compressed_data", path):
        if (root / "train").is_dir() or (root / "test").is_dir():
            return root
    raise ReleaseFormatError(f"{path}: not a release folder: expected compressed_data/train or compressed_data/test")


def _read_eval_ids(directory: Path) -> set[str]:
    if _resolve(directory / "eval_ids.json") is None:
        log.warning("%s: no eval_ids.json; every query of this set goes to train", directory)
        return set()
    found, ids = load_json(directory / "eval_ids.json")
    if not isinstance(ids, list):
        raise ReleaseFormatError(f"{found}: expected a list of prompt ids")
    return {str(i) for i in ids}


def _rows(benchmark: str, rows: Iterator[Row], candidates: tuple[str, ...], split_of) -> list[dict[str, Any]]:
    out = []
    for prompt_id, prompt, responses, scores, aux in rows:
        out.append(
            {
                "prompt_id": prompt_id,
                "benchmark": benchmark,
                "prompt": prompt,
                "candidates": list(candidates),
                "responses": responses,
                "scores": scores,
                "split": split_of(prompt_id),
                "aux": json.dumps(aux) if aux is not None else None,
            }
        )
    return out


def import_release(path: str | Path, config: DataConfig = DataConfig()) -> pd.DataFrame:
    """Read every set of the release at `path` for `config.candidates` into one frame."""
    root = release_root(path)
    candidates = tuple(config.candidates)
    frames = []
    for name in TRAINING_SETS:
        directory = root / "train" / name
        if not directory.is_dir():
            log.warning("skipping training set %s: %s not found", name, directory)
            continue
        eval_ids = _read_eval_ids(directory)
        rows = _rows(name, read_training_set(directory, candidates), candidates,
                     lambda pid, e=eval_ids: "val" if pid in e else "train")
        frames.append(_checked(rows, name, directory))
    for benchmark, (folder, reader) in TEST_SETS.items():
        directory = root / folder
        if not directory.is_dir():
            log.warning("skipping test set %s: %s not found", benchmark, directory)
            continue
        rows = _rows(benchmark, reader(directory, candidates), candidates,
                     lambda pid, b=benchmark: assign_split(b, pid, config.split))
        frames.append(_checked(rows, benchmark, directory))
    if not frames:
        raise ReleaseFormatError(f"{root}: found none of the release's sets under train/ or test/")
    return pd.concat(frames, ignore_index=True)[list(COLUMNS)]


def _checked(rows: list[dict[str, Any]], name: str, directory: Path) -> pd.DataFrame:
    if not rows:
        raise ReleaseFormatError(f"{directory}: {name} yielded no queries")
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    check_rows(frame, str(directory))
    log.info("%s: %d queries", name, len(frame))
    return frame
