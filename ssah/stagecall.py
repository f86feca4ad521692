"""Into a stage's body from its composed config: the one call behind the stage door
(ssah.cli.door: a stage's CLI, a plan's row) and behind a world build that runs a stage inside
another job (the smollm2 alignment, ssah/worlds/smollm2/build.py).

The door adds what only a stage's own job may do (`prepare`): set this process's threads and
data mirror, skip a finished sweep job, build the worlds it reads, and end a bad run in one
line with exit code 2. A world build keeps its own threads (the world's, pinned for the same
numbers on any machine), reads only artifacts already built, and raises to the job that asked
for the world.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

HEADLINES = (
    "safety/asr/direct/",
    "safety/asr/paper_avg/",
    "safety/over_refusal",
    "utility/accuracy",
    "utility/ppl",
    "freeze/frozen_params_fraction",
    "prune/params_fraction",
    "train/loss",
)


def _headline(key: str) -> bool:
    """A HEADLINES key itself, or one judge below a HEADLINES prefix ending in '/'."""
    return any(
        key == h or (h.endswith("/") and key.startswith(h) and "/" not in key[len(h) :])
        for h in HEADLINES
    )


def is_rank_zero() -> bool:
    """This process is rank 0 of its job (or the only one): Lightning's DDP ranks carry RANK,
    the tasks srun starts SLURM_PROCID."""
    return (os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or "0") == "0"


def print_summary(name: str, metrics: Any, out_dir: Path, seconds: float) -> None:
    """The last lines a user sees: where the results are, and the headline numbers (a rate
    with its 95% interval and n when the run wrote them). Rank zero only."""
    if not is_rank_zero() or not isinstance(metrics, dict):
        return
    lines = [f"[ssah] {name} finished in {seconds:.1f} s -> {out_dir / 'metrics.json'}"]
    for key in sorted(metrics):
        value = metrics[key]
        if not _headline(key) or not isinstance(value, int | float):
            continue
        text = f"  {key} = {value:.4g}"
        lo, hi, n = (metrics.get(f"{key}/{s}") for s in ("ci_low", "ci_high", "n"))
        if lo is not None and hi is not None:
            text += f" [{lo:.3g}, {hi:.3g}]"
        if n is not None:
            text += f" (n={int(n)})"
        lines.append(text)
    print("\n".join(lines), file=sys.stderr, flush=True)


def enter_stage(
    name: str,
    cfg: DictConfig,
    out_dir: Path,
    fn: Callable[[DictConfig], Any],
    prepare: Callable[[DictConfig], Any] | None = None,
) -> Any:
    """Check the typed config (one line per bad key, before any work), `prepare(cfg)` (the
    door's job set-up; a result other than None ends here: a finished job's metrics), run
    the body, print the closing summary. Errors propagate (SsahError: one line at the door)."""
    from ssah.schema import validate  # models and data behind it: not at a stage's import

    validate(cfg)
    t0 = time.perf_counter()  # the worlds `prepare` builds count: they are this run's time
    if prepare is not None:
        done = prepare(cfg)
        if done is not None:
            return done
    result = fn(cfg)
    print_summary(name, result, out_dir, time.perf_counter() - t0)
    return result
