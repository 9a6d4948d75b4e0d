"""The routing-dataset schema: one row per prompt, every candidate's response and raw score.

Stored as Parquet under `DIR/data/<benchmark>.parquet` with `DIR/manifest.json` beside it, so that
both `ray.data.read_parquet(DIR/data)` and `datasets.load_dataset("parquet", data_dir=DIR/data)`
read it. List columns are aligned with the `candidates` column, which repeats the pool's order on
every row so that a shard is self-describing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs

from lookahead_ray.storage import check_reachable, is_uri, join, resolve

TEST_BENCHMARKS: tuple[str, ...] = ("GSM8K", "MATH", "HumanEval", "MBPP", "MT-Bench", "AlpacaEval", "ArenaHard")
"""The seven evaluation benchmarks, by the exact keys used in evaluation JSON."""

TRAINING_SETS: tuple[str, ...] = ("SelfOSSInstructSC2_filtered2", "UltraFeedback", "OpenMathInstruct2_filtered2")
"""Training-only sets of the release; their queries go to train and val, never test."""

SPLITS: tuple[str, ...] = ("train", "val", "test")

SCHEMA = pa.schema(
    [
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("benchmark", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("candidates", pa.list_(pa.string()), nullable=False),
        pa.field("responses", pa.list_(pa.string()), nullable=False),
        pa.field("scores", pa.list_(pa.float64()), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        # Benchmark-specific grading details as JSON (MT-Bench turn grades, ArenaHard games).
        pa.field("aux", pa.string(), nullable=True),
    ]
)
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)

DATA_DIR = "data"
MANIFEST = "manifest.json"


def check_rows(frame: pd.DataFrame, where: str) -> None:
    """Raise ValueError naming `where` and the field if `frame` breaks the schema's invariants."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")
    if frame.empty:
        raise ValueError(f"{where}: no rows")
    for i, row in enumerate(frame.itertuples(index=False)):
        n = len(row.candidates)
        if len(row.responses) != n or len(row.scores) != n:
            raise ValueError(
                f"{where}: row {i} (prompt_id={row.prompt_id!r}): 'responses' and 'scores' must have "
                f"one entry per candidate ({n})"
            )
        if row.split not in SPLITS:
            raise ValueError(f"{where}: row {i} (prompt_id={row.prompt_id!r}): field 'split' is {row.split!r}")
    duplicated = frame.duplicated(subset=["benchmark", "prompt_id"])
    if duplicated.any():
        first = frame[duplicated].iloc[0]
        raise ValueError(f"{where}: duplicate prompt_id {first.prompt_id!r} in {first.benchmark}")


def to_table(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame[list(COLUMNS)], schema=SCHEMA, preserve_index=False)


def write_dataset(frame: pd.DataFrame, out_dir: str | Path, manifest: dict[str, Any]) -> str | Path:
    """Write one Parquet file per benchmark and the manifest; return `out_dir`.

    `out_dir` is a local path or a URI (s3://, gs://: lookahead_ray.storage), written through pyarrow.fs.
    """
    check_rows(frame, str(out_dir))
    check_reachable(out_dir, "--out")  # a missing bucket fails before any file is written
    filesystem, root = resolve(out_dir, "--out")
    data_dir = f"{root}/{DATA_DIR}"
    filesystem.create_dir(data_dir, recursive=True)
    counts = {}
    for benchmark, part in frame.groupby("benchmark", sort=False):
        pq.write_table(to_table(part), f"{data_dir}/{benchmark}.parquet", filesystem=filesystem)
        counts[benchmark] = int(len(part))
    manifest = {**manifest, "counts": counts, "schema": list(COLUMNS)}
    with filesystem.open_output_stream(f"{root}/{MANIFEST}") as out:
        out.write((json.dumps(manifest, indent=2) + "\n").encode())
    return out_dir if is_uri(out_dir) else Path(out_dir)


def is_dataset(path: str | Path) -> bool:
    filesystem, root = resolve(path, "dataset")
    return filesystem.get_file_info(f"{root}/{MANIFEST}").type == fs.FileType.File


def read_manifest(path: str | Path) -> dict[str, Any]:
    filesystem, root = resolve(path, "dataset")
    try:
        with filesystem.open_input_stream(f"{root}/{MANIFEST}") as source:
            return json.loads(source.read())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{join(path, MANIFEST)}: cannot read the manifest: {err}") from err


def read_dataset(path: str | Path, benchmarks: Iterable[str] | None = None) -> pd.DataFrame:
    """Read an imported routing dataset (all benchmarks, or the named ones; local or a URI) into pandas."""
    filesystem, root = resolve(path, "dataset")
    where = join(path, DATA_DIR)
    listing = filesystem.get_file_info(fs.FileSelector(f"{root}/{DATA_DIR}", allow_not_found=True))
    files = sorted(info.path for info in listing if info.path.endswith(".parquet"))
    if benchmarks is not None:
        wanted = set(benchmarks)
        files = [f for f in files if Path(f).stem in wanted]
    if not files:
        raise ValueError(f"{where}: no Parquet files of the routing-dataset schema")
    frames = []
    for file in files:
        table = pq.read_table(file, filesystem=filesystem)
        missing = [c for c in COLUMNS if c not in table.column_names]
        if missing:
            raise ValueError(f"{file}: missing field(s) {missing}")
        frames.append(table.select(list(COLUMNS)).to_pandas())
    frame = pd.concat(frames, ignore_index=True)
    check_rows(frame, where)
    return frame


def aux_of(row: Any) -> dict[str, Any]:
    """The decoded `aux` JSON of a row (empty dict when absent)."""
    return json.loads(row["aux"]) if isinstance(row["aux"], str) and row["aux"] else {}
