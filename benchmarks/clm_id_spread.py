"""How far a causal router's model-ID rows are apart, and how much its candidate ranking depends on the query.

    python benchmarks/clm_id_spread.py --data ../shared/data/lookahead-release CHECKPOINT [CHECKPOINT ...]

For each Lookahead-CLM checkpoint: the mean pairwise distance of the model-ID embedding rows against
a typical row's norm; on the first `--per-set` val prompts of each selecting benchmark (val only,
never test), the spread over queries of each candidate's score relative to the mean over candidates
(0 would be a router whose ranking is one bias per candidate, the same for every query), those
relative scores' means, and the pick counts per benchmark. The last line is the command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def val_prompts(data: str, per_set: int):
    from lookahead_ray.config import load_train_config
    from lookahead_ray.training.data import training_frames

    cfg = load_train_config(ROOT / "configs" / "replay-clm-cpu.yaml", dataset=data)
    _, val = training_frames(cfg)
    return val[val["selects"]].groupby("benchmark").head(per_set).reset_index(drop=True)


def spread(checkpoint: str, val) -> list[str]:
    from lookahead_ray.routers.checkpoint import load_router

    model, spec = load_router(checkpoint)
    if spec.kind != "lookahead-clm":
        raise SystemExit(f"{checkpoint}: a {spec.kind} checkpoint; this reads causal routers only")
    weight = model.lm.get_input_embeddings().weight.detach()
    rows = weight[model.model_token_ids]  # (T, H)
    scores = model.score({"prompt": list(val["prompt"])}).numpy()  # (B, T)
    relative = scores - scores.mean(1, keepdims=True)  # (B, T): what the argmax sees
    lines = [f"{checkpoint}",
             f"  model-ID rows: mean pairwise distance {torch.cdist(rows, rows).sum().item() / (len(rows) ** 2 - len(rows)):.3f}"
             f" (a row's mean norm {weight.norm(dim=1).mean().item():.3f})",
             f"  relative score, std over queries: {np.array2string(relative.std(0), precision=3)}",
             f"  relative score, mean: {np.array2string(relative.mean(0), precision=3)}"]
    for benchmark, group in val.groupby("benchmark"):
        picks = np.bincount(scores[group.index].argmax(1), minlength=scores.shape[1])
        lines.append(f"  picks on {benchmark} val ({len(group)}): {picks.tolist()}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the release folder or an imported dataset")
    parser.add_argument("--per-set", type=int, default=12, help="val prompts per selecting benchmark")
    parser.add_argument("checkpoints", nargs="+", help="Lookahead-CLM checkpoint folders")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    val = val_prompts(args.data, args.per_set)
    for checkpoint in args.checkpoints:
        print("\n".join(spread(checkpoint, val)), flush=True)
    print("command: python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
