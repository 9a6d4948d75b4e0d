"""The `--full` configs hold the paper's recipes: every value of docs/recipes.md's table, checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from lookahead_ray.config import load_train_config

ROOT = Path(__file__).resolve().parents[2]


def recipe_table() -> dict[str, dict[str, str]]:
    """config name -> {column: cell} from the first Markdown table of docs/recipes.md."""
    lines = [line for line in (ROOT / "docs" / "recipes.md").read_text().splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == len(header) and cells[0].startswith("replay-"):
            rows[cells[0]] = dict(zip(header[1:], cells[1:]))
    return rows


@pytest.mark.parametrize("name", ["replay-mlm-gpu", "replay-clm-gpu", "replay-mlc-gpu"])
def test_gpu_config_matches_the_documented_recipe(name):
    table = recipe_table()
    assert name in table, f"docs/recipes.md has no row for {name}"
    cfg = load_train_config(ROOT / "configs" / f"{name}.yaml")
    for column, cell in table[name].items():
        if not cell:
            continue
        value = getattr(cfg, column)
        expected = type(value)(cell) if not isinstance(value, (int, float)) or isinstance(value, bool) else float(cell)
        assert value == expected, f"{name}.{column}: config has {value!r}, docs/recipes.md says {cell}"
    assert cfg.use_gpu and not cfg.drop_tied and cfg.mix == "natural"


def test_the_masked_recipe_fills_2048_tokens():
    cfg = load_train_config(ROOT / "configs" / "replay-mlm-gpu.yaml")
    assert cfg.max_prompt_len + 2 + len(cfg.data.candidates) * cfg.block_len == 2048
    assert cfg.batch_size * cfg.grad_accum == 64
