"""One plan row in its own process: take over the stage config the planner composed, validated
and keyed (handed over whole, never composed again here), go through the stage door, then
mark the result done (meta.json last, beside the stage's metrics.json)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ssah.cli import door
from ssah.config import take_over
from ssah.io import atomic_write_text
from ssah.plan.clock import AttemptClock
from ssah.plan.rejudge import rejudge_dir
from ssah.plan.store import write_meta
from ssah.stagecall import is_rank_zero


def run_row(stage: str, config: Mapping[str, Any], out: str, meta: dict[str, Any]) -> Any:
    """The row's stage run into `out` (a fresh or interrupted result dir), as its CLI would;
    `config` is ssah.config.hand_over's data of the config the planner keyed the row by."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = take_over(config)
    atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(cfg))
    module = importlib.import_module(f"ssah.{stage}")
    clock = AttemptClock(out_dir) if is_rank_zero() else None  # earlier attempts count too
    try:
        result = door(stage, cfg, out_dir, lambda c: module.run(c, out_dir))
        if clock is not None:  # once, by rank 0 of a DDP row
            if meta.get("rejudge") and isinstance(result, dict):
                result = {**result, **rejudge_dir(out_dir, meta["rejudge"], cfg)}
            write_meta(out_dir, {**meta, "attempts": clock.attempts}, clock.total())
    finally:
        if clock is not None:
            clock.stop()
    return result
