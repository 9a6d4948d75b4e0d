"""The routing dataset on disk: Parquet that pandas, HF datasets and the importer agree on."""

import json

import pytest

from lookahead_ray.cli import main
from lookahead_ray.data.schema import COLUMNS, read_dataset, read_manifest


@pytest.fixture(scope="module")
def imported(tmp_path_factory, samples_path):
    out = tmp_path_factory.mktemp("ds") / "samples"
    assert main(["import-release", str(samples_path), "--out", str(out)]) == 0
    return out


def test_import_writes_parquet_per_benchmark_and_a_manifest(imported, samples_frame):
    assert sorted(p.name for p in (imported / "data").iterdir()) == ["AlpacaEval.parquet", "ArenaHard.parquet", "MT-Bench.parquet"]
    manifest = read_manifest(imported)
    assert manifest["counts"] == {"MT-Bench": 3, "AlpacaEval": 3, "ArenaHard": 3}
    assert manifest["candidates"][0] == "Yi-1.5-34B-Chat"
    frame = read_dataset(imported)
    assert sorted(frame["prompt_id"]) == sorted(samples_frame["prompt_id"])
    assert [list(s) for s in frame.sort_values("prompt_id")["scores"]] == [
        list(s) for s in samples_frame.sort_values("prompt_id")["scores"]
    ]


def test_hf_datasets_reads_the_same_rows(imported):
    from datasets import load_dataset

    ds = load_dataset("parquet", data_dir=str(imported / "data"), split="train")
    assert set(ds.column_names) == set(COLUMNS)
    assert len(ds) == 9
    row = ds.filter(lambda r: r["benchmark"] == "ArenaHard")[0]
    assert len(row["scores"]) == len(row["candidates"]) == 5
    assert "games" in json.loads(row["aux"])


def test_a_parquet_file_without_a_field_is_named(imported, tmp_path):
    import pyarrow.parquet as pq

    broken = tmp_path / "broken"
    (broken / "data").mkdir(parents=True)
    table = pq.read_table(imported / "data" / "MT-Bench.parquet").drop_columns(["scores"])
    pq.write_table(table, broken / "data" / "MT-Bench.parquet")
    with pytest.raises(ValueError, match=r"MT-Bench\.parquet: missing field\(s\) \['scores'\]"):
        read_dataset(broken)
