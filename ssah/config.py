"""Compose a stage's config in-process (demo, tests, sweeps' helpers) exactly as its CLI would,
and hand a composed config to another process (a plan's row) whole, so it is composed once."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from ssah.errors import SsahError
from ssah.resolvers import CONF_DIR, register_resolvers


def null_groups(overrides: Sequence[str]) -> None:
    """`logger=null` names a config group (conf/logger/) with no option: Hydra ends it in a
    traceback. One line instead, with the two ways out."""
    for o in overrides:
        key, eq, value = str(o).partition("=")
        group = Path(CONF_DIR) / key
        if eq and value == "null" and not key.startswith(("+", "~", "-")) and group.is_dir():
            options = sorted(f.stem for f in group.glob("*.yaml") if not f.stem.startswith("_"))
            raise SsahError(
                f"{key}=null: {key} is a config group, which cannot be set to null; drop it with "
                f"~{key}, or choose one of {options}."
            )


def compose(stage: str, overrides: Sequence[str] = ()) -> DictConfig:
    """conf/<stage>.yaml with `overrides`; `${hydra:...}` interpolations resolve as in a run."""
    null_groups(overrides)
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3", job_name=stage):
        cfg = hydra_compose(config_name=stage, overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def hand_over(cfg: DictConfig) -> dict[str, Any]:
    """`cfg`, just composed, as plain data that pickles (for a worker process or a SLURM job):
    its values unresolved (paths, world paths, `${hydra:...}` resolve where it runs, as in a
    run) and the Hydra node it was composed with. Call it before anything composes again:
    the Hydra node is the one `compose` left behind."""
    return {
        "config": OmegaConf.to_container(cfg, resolve=False),
        "hydra": OmegaConf.to_container(HydraConfig.get(), resolve=False),
    }


def take_over(handed: Mapping[str, Any]) -> DictConfig:
    """`compose`'s config again from `hand_over`'s data, without composing: the same values
    and flags, and the same Hydra node behind `${hydra:...}` (its `${paths...}` read this
    config, as in `compose`). This process's Hydra state becomes the config's."""
    from hydra.core.utils import setup_globals

    setup_globals()  # Hydra's own resolvers (`${hydra:...}`, `${now:...}`), as composing does
    register_resolvers()
    cfg = OmegaConf.create({**handed["config"], "hydra": handed["hydra"]})
    node = OmegaConf.masked_copy(cfg, "hydra")  # what HydraConfig.set_config keeps
    node.hydra._set_parent(cfg)
    OmegaConf.set_readonly(node.hydra, True)
    HydraConfig.instance().cfg = node  # type: ignore[assignment]
    with open_dict(cfg):
        del cfg["hydra"]
    OmegaConf.set_struct(cfg, True)
    return cfg


@contextmanager
def hydra_state_kept() -> Iterator[None]:
    """`compose` resets Hydra's global state; the stage that asked for the world still needs
    its own (its run dir, `${hydra:...}` values), so put it back afterwards."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.instance().cfg
    gh = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    try:
        yield
    finally:
        HydraConfig.instance().cfg = hc  # type: ignore[assignment]
        if gh is not None:
            GlobalHydra.instance().clear()
            GlobalHydra.instance().initialize(gh)
