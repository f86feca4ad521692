"""Compose a stage's config in-process (demo, tests, sweeps' helpers) exactly as its CLI would."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from ssah.resolvers import CONF_DIR, register_resolvers


def compose(stage: str, overrides: Sequence[str] = ()) -> DictConfig:
    """conf/<stage>.yaml with `overrides`; `${hydra:...}` interpolations resolve as in a run."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3", job_name=stage):
        cfg = hydra_compose(config_name=stage, overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
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
