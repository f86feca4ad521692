"""The stage door every stage shares: Hydra entry, one-line errors, worlds built, the run dir."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssah.errors import SsahError
from ssah.resolvers import CONF_DIR, register_resolvers

# Hydra warns when a plugin launcher config (joblib, submitit) is matched against its schema.
warnings.filterwarnings("ignore", message=r"(?s).*validated against ConfigStore schema")


def run_dir() -> Path:
    """This job's Hydra output dir (falls back to cwd outside Hydra)."""
    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return Path.cwd()


def use_data_mirror(cfg: DictConfig) -> None:
    """Route hub dataset ids through `paths.data_mirror` for this process."""
    from ssah.data.records import set_mirror

    mirror = OmegaConf.select(cfg, "paths.data_mirror")
    set_mirror(OmegaConf.to_container(mirror, resolve=True) if mirror else None)  # type: ignore[arg-type]


def fail(message: str, code: int = 2) -> None:
    """Print one clear line and exit non-zero."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def stage(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """Decorate a stage body `fn(cfg)` into a Hydra app with one-line errors."""

    def deco(fn: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        @hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config_name)
        @functools.wraps(fn)
        def main(cfg: DictConfig) -> Any:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            from ssah.schema import validate
            from ssah.sweep import pin_multirun_job, skip_completed
            from ssah.threads import apply as apply_threads
            from ssah.worlds.ensure import ensure_worlds

            pin_multirun_job(f"ssah.{config_name}")  # a DDP job in a sweep stays in its job dir
            try:
                apply_threads(cfg)  # torch/OMP threads: what this job was given, before torch work
                validate(cfg)  # typed configs: one line per bad key, before any work
                use_data_mirror(cfg)
                done = skip_completed(cfg, run_dir())  # resumed sweeps skip finished jobs
                if done is not None:
                    return done
                ensure_worlds(cfg)  # the toy world this job reads, built once, here
                return fn(cfg)
            except SsahError as e:
                fail(str(e))
            except OmegaConfBaseException as e:
                fail(f"invalid config: {str(e).splitlines()[0]}")

        return main

    return deco


register_resolvers()
