"""Hub models behind the world interface (ssah/worlds/base.py): nothing to build (the model
and data come from the hub, or `paths.data_mirror`); the plan's values name the model and,
with `standin=true`, put every row on a tiny stand-in (`+dry_run=<stage>`, conf/dry_run/)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from ssah.errors import SsahError
from ssah.worlds.base import WorldJob

STAGES = ("evaluate", "score", "prune", "train", "probe")


def needed(cfg: DictConfig) -> list[str]:
    return []


def ensure(cfg: DictConfig, missing: list[str]) -> None:
    """Nothing is built here."""


def prepare(world: dict[str, Any], workers: int) -> None:
    """Nothing is built here."""


def jobs(world: dict[str, Any], seed: int) -> list[WorldJob]:
    return []


def values(world: dict[str, Any], seed: int, plan: DictConfig) -> dict[str, Any]:
    model = plan.get("model")
    if not model:
        raise SsahError(
            "world=hub needs model=<name> (a conf/model entry, e.g. model=llama2_7b_chat)."
        )
    dry = bool(plan.get("standin"))
    out: dict[str, Any] = {"model": str(model)}
    if dry:
        out["ft_steps"] = 2  # a stand-in fine-tunes for two steps, whatever the preset says
    out.update({f"dry_run_{s}": [f"+dry_run={s}"] if dry else [] for s in STAGES})
    return out


def seeded(world: dict[str, Any], seed: int) -> dict[str, Any]:
    """A hub model is aligned by its makers: there is no alignment seed to tie."""
    return world


def describe(world: dict[str, Any]) -> str:
    return ""
