"""The toy world behind the world interface (ssah/worlds/base.py): each plan instance is an
independently built toy world (toy.seed = the instance's seed), built as a job of its own."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from ssah.worlds.base import WorldJob


def needed(cfg: DictConfig) -> list[str]:
    from ssah.worlds.toy.cache import locate
    from ssah.worlds.toy.reads import reads_toy

    if not reads_toy(cfg):
        return []
    return [] if locate(cfg.toy).built else ["world"]


def ensure(cfg: DictConfig, missing: list[str]) -> None:
    from ssah.worlds.toy.world import ensure_toy  # heavy imports only when building

    ensure_toy(cfg.toy)


def prepare(world: dict[str, Any], workers: int) -> None:
    """Nothing to share: each instance builds its own world in a job."""


def build_instance(recipe: str, seed: int) -> dict[str, Any]:
    """In a worker: the toy world of one instance (built once, cached)."""
    from ssah.config import compose
    from ssah.worlds.toy.world import ensure_toy

    built = ensure_toy(compose("toy", [f"toy={recipe}", f"toy.seed={seed}"]).toy)
    return {"dir": str(built.root)}


def jobs(world: dict[str, Any], seed: int) -> list[WorldJob]:
    from ssah.config import compose
    from ssah.worlds.toy.cache import locate

    recipe = str(world["plan"]["vars"].get("toy", "default"))
    found = locate(compose("toy", [f"toy={recipe}", f"toy.seed={seed}"]).toy)
    built = {"dir": str(found.root)} if found.built else None
    return [WorldJob(f"toy_world_{seed}", build_instance, (recipe, seed), True, built)]


def values(world: dict[str, Any], seed: int, plan: DictConfig) -> dict[str, Any]:
    return {}


def seeded(world: dict[str, Any], seed: int) -> dict[str, Any]:
    """Each toy instance is already its own world (toy.seed = seed, its alignment included)."""
    return world


def describe(world: dict[str, Any]) -> str:
    return ""
