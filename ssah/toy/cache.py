"""Where a toy world lives, and building it on first *use* rather than on first mention.

`${toy:aligned}` only says where the world will be (`<cache_dir>/<hash of the toy config>/`)
and notes it as pending; the loaders (`ssah.models`, `ssah.data.records`) call `materialize`
before they read a path, which builds a pending world the path lies in. So composing or merging
configs that mention the toy world (a real-model preset over the toy defaults, a logged config)
never builds it; reading its files does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssah.errors import SsahError

WHICH = ("base", "aligned", "data", "tokenizer", "root")
_PENDING: dict[Path, dict[str, Any]] = {}  # world root -> its toy config, not built yet


@dataclass(frozen=True)
class ToyWorld:
    """Paths of one toy world."""

    root: Path

    def path(self, which: str) -> Path:
        if which not in WHICH:
            raise SsahError(f"${{toy:{which}}} is unknown; use one of {WHICH}.")
        return self.root if which == "root" else self.root / which

    def data(self, name: str) -> Path:
        return self.root / "data" / f"{name}.jsonl"

    @property
    def built(self) -> bool:
        return (self.root / "DONE").is_file()


def config_key(cfg: dict[str, Any]) -> str:
    """Content hash of the toy config (where it is cached does not change what is built)."""
    body = {k: v for k, v in cfg.items() if k != "cache_dir"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]


def plain_config(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return cfg


def locate(cfg: DictConfig | dict[str, Any]) -> ToyWorld:
    """The world `cfg` describes, built or not; an unbuilt one is noted for `materialize`."""
    plain = plain_config(cfg)
    world = ToyWorld(Path(plain["cache_dir"]).expanduser().resolve() / config_key(plain))
    if not world.built:
        _PENDING[world.root] = plain
    return world


def materialize(path: str | Path) -> None:
    """Build the pending toy world that `path` lies in (no-op for any other path)."""
    if not _PENDING:
        return
    p = Path(path).expanduser().resolve()
    for root in [r for r in _PENDING if r == p or r in p.parents]:
        from ssah.toy.world import ensure_toy  # heavy imports only when building

        ensure_toy(_PENDING.pop(root))
