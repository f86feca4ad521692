"""OmegaConf resolvers that every config needs and that know no world: `${cwd:}` (paths),
`${run_id:...}` (run dirs), `${sweep_group:...}` (W&B groups).

They sit on the ground floor so that `ssah.config.compose` can register them without reaching
up into the worlds; the resolvers that name a path in a world (`${toy:...}`, `${smollm2:...}`,
`${standin:...}`) live with the worlds (`ssah.worlds.resolvers`) and the stage door, which is
above both, registers them (`register_resolvers(WORLD_RESOLVERS)`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ssah.io import CONF_DIR  # noqa: F401  (re-exported: the stage door and compose use it)


def sweep_group(sweep_name: str | None, sweep_dir: str | Path | None) -> str | None:
    """The W&B group of a job: the sweep's name when set, else its sweep dir's name."""
    if sweep_name:
        return str(sweep_name)
    if sweep_dir:
        return Path(str(sweep_dir)).name or None
    return None


def sweep_group_resolver(name: str | None = None) -> str | None:
    """`${sweep_group:${oc.select:sweep_name,null}}`: the name given, else (in a multirun job)
    the sweep dir's name, else None (a single run has no group); conf/logger/wandb.yaml."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if name:
        return str(name)
    try:
        hc = HydraConfig.get()
    except ValueError:
        return None
    if hc.mode != RunMode.MULTIRUN:
        return None
    return sweep_group(None, hc.sweep.dir)


def run_id(stamp: str) -> str:
    """`${run_id:${now:...}}`: the run dir's last part. Inside a SLURM job `slurm-<job id>`:
    every task of a multi-task job (srun, DDP ranks) names the same dir, and a requeued job
    runs again in it, so it continues from its checkpoint. Elsewhere the time stamp."""
    job = os.environ.get("SLURM_JOB_ID")
    return f"slurm-{job}" if job else stamp


PURE: dict[str, Callable[..., Any]] = {
    "sweep_group": sweep_group_resolver,
    "run_id": run_id,
    "cwd": os.getcwd,  # usable before HydraConfig exists (multirun dirs)
}


def register_resolvers(extra: Mapping[str, Callable[..., Any]] | None = None) -> None:
    """Register the world-free resolvers, and `extra` (the caller's: the door passes the
    worlds' path resolvers), once per process."""
    for name, fn in {**PURE, **(extra or {})}.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
