"""Compose a stage's config in-process (demo, tests, sweeps' helpers) exactly as its CLI would."""

from __future__ import annotations

from collections.abc import Sequence

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
