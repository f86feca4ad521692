"""Whether a job config reads the toy world (pure: resolves paths, builds nothing)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssah.worlds.toy.cache import locate


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


def reads_toy(cfg: DictConfig) -> bool:
    """Whether any resolved value of the job (its `toy` recipe aside) points into its toy world."""
    toy = OmegaConf.select(cfg, "toy")
    if toy is None:
        return False
    root = str(locate(toy).root)
    plain = OmegaConf.to_container(cfg, resolve=True)
    body = {k: v for k, v in plain.items() if k not in ("toy", "hydra", "world")}  # type: ignore[union-attr]
    return any(s == root or s.startswith(root + "/") for s in _strings(body))
