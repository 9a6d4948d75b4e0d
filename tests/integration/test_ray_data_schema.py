"""Ray Data reads the routing dataset that the importer writes."""

import pytest

from lookahead_ray.cli import main

pytestmark = pytest.mark.integration


def test_ray_data_reads_the_imported_dataset(ray_local, samples_path, tmp_path):
    out = tmp_path / "ds"
    assert main(["import-release", str(samples_path), "--out", str(out)]) == 0
    ds = ray_local.data.read_parquet(str(out / "data"))
    assert ds.count() == 9
    rows = ds.filter(lambda r: r["benchmark"] == "AlpacaEval").take_all()
    assert len(rows) == 3
    assert all(len(r["scores"]) == len(r["responses"]) == len(r["candidates"]) == 5 for r in rows)
    assert {r["split"] for r in ds.take_all()} <= {"train", "val", "test"}
