"""Build, at the door, the worlds a job's resolved config points into.

Resolvers only compute paths; this is the one place that turns "the config names a path in
the toy world" into "the toy world exists". Stages call it before any model or data loads;
the sweep callback calls it once before parallel jobs start.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssah.worlds.toy.cache import ToyWorld, locate

log = logging.getLogger(__name__)


def _strings(node: Any) -> Iterator[str]:
    """Every string value, skipping sections switched off with `enabled: false`."""
    if isinstance(node, dict):
        if node.get("enabled") is False:
            return
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list | tuple):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node


def needs_toy(cfg: DictConfig) -> ToyWorld | None:
    """The toy world this config reads from, or None (a real model, or no `toy` node)."""
    toy = OmegaConf.select(cfg, "toy")
    if toy is None:
        return None
    world = locate(toy)
    root = str(world.root)
    plain = OmegaConf.to_container(cfg, resolve=True)
    body = {k: v for k, v in plain.items() if k not in ("toy", "hydra")}  # type: ignore[union-attr]
    if any(s == root or s.startswith(root + "/") for s in _strings(body)):
        return world
    return None


def ensure_worlds(cfg: DictConfig) -> None:
    """Build every world `cfg` reads from and that is not built yet."""
    world = needs_toy(cfg)
    if world is not None and not world.built:
        from ssah.worlds.toy.world import ensure_toy  # heavy imports only when building

        ensure_toy(cfg.toy)
    from ssah.worlds.smollm2.world import needed as smollm2_needed

    missing = smollm2_needed(cfg)
    if missing:
        from ssah.worlds.smollm2.world import config_of
        from ssah.worlds.smollm2.world import ensure as ensure_smollm2

        ensure_smollm2(config_of(cfg), upto=missing[-1])
