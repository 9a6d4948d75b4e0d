"""One loader for every command: an imported routing dataset or a release folder, as one frame."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lookahead_ray.config import DataConfig
from lookahead_ray.data.release import import_release
from lookahead_ray.data.schema import is_dataset, read_dataset, read_manifest


def load_frame(data: str | Path, config: DataConfig) -> pd.DataFrame:
    """An imported dataset (folder with manifest.json) or a release folder, as one frame."""
    if is_dataset(data):
        manifest = read_manifest(data)
        stored = list(manifest.get("candidates", []))
        if stored != list(config.candidates):
            raise ValueError(
                f"{data}: imported for candidates {stored}, but the config names {list(config.candidates)}; "
                "re-import or pass the matching --config"
            )
        return read_dataset(data)
    return import_release(data, config)


def dataset_config(data: str) -> DataConfig:
    """The DataConfig a dataset folder was made with (its manifest's candidates, default labels/split)."""
    if not is_dataset(data):
        raise ValueError(f"--data {data}: not a routing dataset folder (no manifest.json); pass --config")
    return DataConfig(candidates=tuple(read_manifest(data)["candidates"]))
