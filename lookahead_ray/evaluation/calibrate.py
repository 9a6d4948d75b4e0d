"""Calibrate the cost knob: the cost weight that meets a cost or quality target on given data.

A target is a share of the best single candidate's figures (see frontier.reference):
- `cost_share` s: the weight with the best quality among those whose mean cost per query is at
  most s * (best candidate's cost); ties go to the cheaper point, then the lower weight;
- `quality_share` s: the cheapest weight whose quality is at least s * (best candidate's quality);
  ties go to the better point, then the lower weight.
Only grid weights are returned (a served weight is one number; no mixing of two weights).
The weight then goes where the Serve app reads it (`listed_cost_weights`, optionally
`default_cost_weight`, in the Serve config YAML) and onto the router's MLflow model version.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from lookahead_ray.tracking import tracking_uri

TARGET_KINDS = ("cost_share", "quality_share")


def check_target(kind: str, value: Any) -> float:
    if kind not in TARGET_KINDS:
        raise ValueError(f"target kind must be one of {TARGET_KINDS}, got {kind!r}")
    flag = f"--target-{kind.replace('_', '-')}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{flag} must be a number in (0, 1], got {value!r}")
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{flag} must be in (0, 1], got {value}")
    return float(value)


def pick_weight(points: list[dict[str, Any]], ref: dict[str, Any], kind: str, target: float) -> dict[str, Any]:
    """The calibrated operating point of one router's sweep (see the module docstring)."""
    target = check_target(kind, target)
    best = ref["best"]
    if kind == "cost_share":
        if ref["best_cost"] <= 0:
            raise ValueError(f"cost shares are undefined: the best candidate {best!r} costs {ref['best_cost']} per query")
        shares = [p["cost"] / ref["best_cost"] for p in points]
        feasible = [p for p, s in zip(points, shares) if s <= target + 1e-12]
        key = lambda p: (-p["quality"], p["cost"], p["cost_weight"])  # noqa: E731
    else:
        if ref["best_quality"] <= 0:
            raise ValueError(f"quality shares are undefined: the best candidate {best!r} has quality "
                             f"{ref['best_quality']:.3f} (mean normalised score), not above random")
        shares = [p["quality"] / ref["best_quality"] for p in points]
        feasible = [p for p, s in zip(points, shares) if s >= target - 1e-12]
        key = lambda p: (p["cost"], -p["quality"], p["cost_weight"])  # noqa: E731
    if not feasible:
        label = kind.replace("_", " ")
        raise ValueError(f"target {label} {target} cannot be reached: the cost weights in [0, 1] give {label}s "
                         f"from {min(shares):.3f} to {max(shares):.3f} of the best candidate {best!r} on this data")
    chosen = min(feasible, key=key)
    return {"cost_weight": chosen["cost_weight"], "target": {kind: target},
            "cost": chosen["cost"], "cost_share": chosen["cost"] / ref["best_cost"] if ref["best_cost"] > 0 else None,
            "quality": chosen["quality"],
            "quality_share": chosen["quality"] / ref["best_quality"] if ref["best_quality"] > 0 else None,
            "benchmarks": chosen["benchmarks"], "best_candidate": best}


_LISTED = re.compile(r"^(?P<head>\s*listed_cost_weights:\s*)\[(?P<values>[^\]]*)\](?P<tail>.*)$", re.M)
_DEFAULT = re.compile(r"^(?P<head>\s*default_cost_weight:\s*)(?P<value>[^\s#]+)(?P<tail>.*)$", re.M)


def write_serve_config(path: str | Path, weight: float, set_default: bool = False) -> list[float]:
    """Add `weight` to the Serve config's `listed_cost_weights` (and make it `default_cost_weight`).

    Edits those lines in place so that the file's comments survive (a YAML round trip drops them).
    Returns the new list.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ValueError(f"{path}: cannot read the Serve config: {err}") from err
    found = _LISTED.findall(text)
    if len(found) != 1:
        raise ValueError(f"{path}: expected one `listed_cost_weights: [...]` line, found {len(found)}")
    try:
        current = [float(v) for v in found[0][1].split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{path}: listed_cost_weights is not a list of numbers: [{found[0][1]}]") from None
    weights = sorted(set(current) | {float(weight)})
    listed = ", ".join(repr(w) for w in weights)
    text = _LISTED.sub(lambda m: f"{m['head']}[{listed}]{m['tail']}", text)
    if set_default:
        if len(_DEFAULT.findall(text)) != 1:
            raise ValueError(f"{path}: expected one `default_cost_weight:` line")
        text = _DEFAULT.sub(lambda m: f"{m['head']}{float(weight)!r}{m['tail']}", text)
    path.write_text(text)
    return weights


def tag_model_version(source: str, calibration: dict[str, Any], data: str, split: str, candidates: list[str]) -> str:
    """Record the calibration on the MLflow model version of `source` (`models:/<name>/<version|latest>`,
    `latest` meaning what the Serve app means: the newest version trained for `candidates`).

    Tag `cost_weight/<kind>_<target>` = the weight, and `calibration/<kind>_<target>` = the JSON
    (data, split, cost and quality shares). Returns `models:/<name>/<version>`.
    """
    import mlflow  # heavy: off the CLI's start-up path

    from lookahead_ray.registry import resolve_registered  # heavy (torch): off the CLI's start-up path

    uri = tracking_uri()
    resolved, _ = resolve_registered(source, list(candidates), uri)  # also checks the version's pool
    name, version = resolved.removeprefix("models:/").split("/")
    client = mlflow.MlflowClient(uri)
    (kind, target), = calibration["target"].items()
    suffix = f"{kind}_{target:g}"
    client.set_model_version_tag(name, version, f"cost_weight/{suffix}", str(calibration["cost_weight"]))
    details = {k: calibration[k] for k in ("cost_weight", "cost_share", "quality_share", "best_candidate")}
    client.set_model_version_tag(name, version, f"calibration/{suffix}", json.dumps({**details, "data": data, "split": split}))
    return resolved
