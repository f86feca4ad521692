"""What every world module offers the stage door and the plan runner (one interface).

A world is a defaults group (conf/world/<name>.yaml, whose `module:` names its module) plus a
module with these functions:
  needed(cfg) -> list[str]        the artifacts a stage config reads and lacks (pure)
  ensure(cfg, missing) -> None    build them (the stage door calls this)
  prepare(world, workers) -> None build, in the plan's own process, what every row reads and
                                  is best built once before rows start (may be a no-op)
  jobs(world, seed) -> [WorldJob] the builds rows wait for, run as jobs beside other rows
  values(world, seed, plan) -> {} the @{var} values the world computes (paths, recipe parts)
  describe(world) -> str          the report's world section (markdown; "" for none)
The door finds world modules by walking ssah.worlds (every subpackage or module with these
functions) plus the `world.module` a job config names, never by a list of names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

INTERFACE = ("needed", "ensure", "prepare", "jobs", "values", "describe")


@dataclass(frozen=True)
class WorldJob:
    """A world build run as a plan job. `early`: rows marked base_only wait for it too (it
    builds what every row reads); otherwise only rows that read the late artifacts wait.
    `built`: its result when the world is already there (no job is run; on SLURM a no-op job
    would still wait in the queue), else None."""

    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    early: bool = True
    built: dict[str, Any] | None = None
