"""metrics.json: a flat JSON object of final numbers with '/'-separated keys (contract 2)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ssah.io import atomic_write_text


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a/b': 1}."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN; None says "not measured / diverged"
    return v


def write_metrics(out_dir: str | Path, metrics: Mapping[str, Any]) -> Path:
    """Write metrics.json (sorted, flat) atomically; returns its path. Adds how the stage ran
    (`env/torch_threads`, ssah.threads) where the metrics do not say it already."""
    from ssah.threads import run_env

    flat = {k: _plain(v) for k, v in sorted(flatten({**run_env(), **metrics}).items())}
    return atomic_write_text(Path(out_dir) / "metrics.json", json.dumps(flat, indent=2) + "\n")


def read_metrics(path: str | Path) -> dict[str, Any]:
    """Read a metrics.json (or the one inside a run dir)."""
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.json"
    return json.loads(p.read_text())
