"""The stage door every stage shares: Hydra entry, one-line errors, worlds built, the run dir."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssah.config import null_groups
from ssah.errors import SsahError
from ssah.io import CONF_DIR
from ssah.quiet import silence_third_party
from ssah.stagecall import enter_stage
from ssah.worlds.resolvers import register_world_resolvers

silence_third_party()  # before Hydra validates launcher configs against their schemas


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


def door(name: str, cfg: DictConfig, out_dir: Path, fn: Callable[[DictConfig], Any]) -> Any:
    """The one way into a stage, from its CLI or from a plan's row: validate the typed config,
    set the threads the job was given, route data, skip a finished job, build the worlds it
    reads, run it, print the closing summary (ssah.stagecall.enter_stage, with this job's
    set-up). Bad input ends in one line and exit code 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return enter_stage(name, cfg, out_dir, fn, prepare=lambda c: _this_job(c, out_dir))
    except SsahError as e:
        fail(str(e))
    except OmegaConfBaseException as e:
        fail(f"invalid config: {str(e).splitlines()[0]}")


def _this_job(cfg: DictConfig, out_dir: Path) -> dict[str, Any] | None:
    """What only a stage's own job does before its body: this process's threads (before any
    torch work) and data mirror, a finished sweep job skipped (its metrics returned), the
    worlds it reads built once, here."""
    from ssah.sweep import skip_completed
    from ssah.threads import apply as apply_threads
    from ssah.worlds.ensure import ensure_worlds

    apply_threads(cfg)
    use_data_mirror(cfg)
    done = skip_completed(cfg, out_dir)  # resumed sweeps skip finished jobs
    if done is None:
        ensure_worlds(cfg)
    return done


def stage(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """Decorate a stage body `fn(cfg)` into a Hydra app that goes through the door."""

    def deco(fn: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        @hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config_name)
        @functools.wraps(fn)
        def main(cfg: DictConfig) -> Any:
            from ssah.sweep import pin_multirun_job

            pin_multirun_job(f"ssah.{config_name}")  # a DDP job in a sweep stays in its job dir
            return door(config_name, cfg, run_dir(), fn)

        @functools.wraps(fn)
        def entry() -> Any:
            try:
                null_groups(sys.argv[1:])  # before Hydra, which answers it with a traceback
            except SsahError as e:
                fail(str(e))
            return main()

        return entry

    return deco


register_world_resolvers()  # every config a stage composes may name a path in a world
