"""Thin glue every stage shares: Hydra entry, resolvers, one-line errors, the run dir."""

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

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
# Hydra warns when a plugin launcher config (joblib, submitit) is matched against its schema.
warnings.filterwarnings("ignore", message=r"(?s).*validated against ConfigStore schema")


def register_resolvers() -> None:
    """`${toy:aligned}` builds (once, cached) and returns the toy checkpoint dir."""
    if not OmegaConf.has_resolver("toy"):
        OmegaConf.register_new_resolver("toy", _toy_path)
    if not OmegaConf.has_resolver("sweep_group"):  # W&B group: sweep_name, else the sweep dir
        from ssah.sweep import sweep_group_resolver

        OmegaConf.register_new_resolver("sweep_group", sweep_group_resolver)
    if not OmegaConf.has_resolver("standin"):  # dry runs: tiny model of an architecture, data
        OmegaConf.register_new_resolver("standin", _standin_model)
        OmegaConf.register_new_resolver("standin_data", _standin_data)
    if not OmegaConf.has_resolver("cwd"):  # usable before HydraConfig exists (multirun dirs)
        OmegaConf.register_new_resolver("cwd", os.getcwd)


def _toy_path(which: str, *, _root_: DictConfig) -> str:
    """Where the toy world is; built when a loader first reads it (ssah.toy.cache)."""
    from ssah.toy.cache import locate

    return str(locate(_root_.toy).path(which))


def _standin_model(spec: DictConfig, *, _root_: DictConfig) -> str:
    """`${standin:${model.standin}}`: a tiny random-init checkpoint of that architecture."""
    from ssah.standin import build_model

    if spec is None:
        raise SsahError("this model config has no `standin:` architecture; a dry run needs one.")
    plain = OmegaConf.to_container(spec, resolve=True)
    return str(build_model(plain, Path(_root_.paths.standins)))  # type: ignore[arg-type]


def _standin_data(*, _root_: DictConfig) -> str:
    """`${standin_data:}`: one small JSONL that every dataset config can read."""
    from ssah.standin import build_data

    return str(build_data(Path(_root_.paths.standins)))


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
            from ssah.sweep import pin_multirun_job, skip_completed

            pin_multirun_job(f"ssah.{config_name}")  # a DDP job in a sweep stays in its job dir
            try:
                use_data_mirror(cfg)
                done = skip_completed(cfg, run_dir())  # resumed sweeps skip finished jobs
                if done is not None:
                    return done
                return fn(cfg)
            except SsahError as e:
                fail(str(e))
            except OmegaConfBaseException as e:
                fail(f"invalid config: {str(e).splitlines()[0]}")

        return main

    return deco


register_resolvers()
