"""Where a toy world lives: `<cache_dir>/<hash of the toy config>/`, pure path arithmetic.

`${toy:aligned}` only says where the world is; nothing here builds it. The stage door
(`ssah.worlds.ensure`) builds a world that the resolved job config points into, so composing
or merging configs that mention the toy world (a real-model preset over the toy defaults, a
logged config) never builds it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssah.errors import SsahError
from ssah.io import damage

WHICH = ("base", "aligned", "data", "tokenizer", "root")


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
        """Finished and whole (a damaged world is rebuilt at the door)."""
        return (self.root / "DONE").is_file() and damage(self.root) is None


def config_key(cfg: dict[str, Any]) -> str:
    """Content hash of the toy config (where it is cached does not change what is built)."""
    body = {k: v for k, v in cfg.items() if k != "cache_dir"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]


def plain_config(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return cfg


def locate(cfg: DictConfig | dict[str, Any]) -> ToyWorld:
    """The world `cfg` describes, built or not."""
    plain = plain_config(cfg)
    return ToyWorld(Path(plain["cache_dir"]).expanduser().resolve() / config_key(plain))
