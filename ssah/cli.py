"""The stage door every stage shares: Hydra entry, one-line errors, worlds built, the run dir."""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssah.errors import SsahError
from ssah.io import CONF_DIR
from ssah.quiet import silence_third_party
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


HEADLINES = (
    "safety/asr/direct/",
    "safety/asr/paper_avg/",
    "safety/over_refusal",
    "utility/accuracy",
    "utility/ppl",
    "freeze/frozen_params_fraction",
    "prune/params_fraction",
    "train/loss",
)


def _headline(key: str) -> bool:
    """A HEADLINES key itself, or one judge below a HEADLINES prefix ending in '/'."""
    return any(
        key == h or (h.endswith("/") and key.startswith(h) and "/" not in key[len(h) :])
        for h in HEADLINES
    )


def is_rank_zero() -> bool:
    """This process is rank 0 of its job (or the only one): Lightning's DDP ranks carry RANK,
    the tasks srun starts SLURM_PROCID."""
    return (os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or "0") == "0"


def print_summary(name: str, metrics: Any, out_dir: Path, seconds: float) -> None:
    """The last lines a user sees: where the results are, and the headline numbers (a rate
    with its 95% interval and n when the run wrote them). Rank zero only."""
    if not is_rank_zero() or not isinstance(metrics, dict):
        return
    lines = [f"[ssah] {name} finished in {seconds:.1f} s -> {out_dir / 'metrics.json'}"]
    for key in sorted(metrics):
        value = metrics[key]
        if not _headline(key) or not isinstance(value, int | float):
            continue
        text = f"  {key} = {value:.4g}"
        lo, hi, n = (metrics.get(f"{key}/{s}") for s in ("ci_low", "ci_high", "n"))
        if lo is not None and hi is not None:
            text += f" [{lo:.3g}, {hi:.3g}]"
        if n is not None:
            text += f" (n={int(n)})"
        lines.append(text)
    print("\n".join(lines), file=sys.stderr, flush=True)


def door(name: str, cfg: DictConfig, out_dir: Path, fn: Callable[[DictConfig], Any]) -> Any:
    """The one way into a stage, from its CLI or from a plan's row: validate the typed config,
    set the threads the job was given, route data, skip a finished job, build the worlds it
    reads, run it, print the closing summary. Bad input ends in one line and exit code 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from ssah.schema import validate
    from ssah.sweep import skip_completed
    from ssah.threads import apply as apply_threads
    from ssah.worlds.ensure import ensure_worlds

    try:
        validate(cfg)  # typed configs: one line per bad key, before any work
        apply_threads(cfg)  # torch/OMP threads: what this job was given, before torch work
        use_data_mirror(cfg)
        done = skip_completed(cfg, out_dir)  # resumed sweeps skip finished jobs
        if done is not None:
            return done
        t0 = time.perf_counter()  # the world build counts: it is this run's time
        ensure_worlds(cfg)  # the worlds this job reads, built once, here
        result = fn(cfg)
        print_summary(name, result, out_dir, time.perf_counter() - t0)
        return result
    except SsahError as e:
        fail(str(e))
    except OmegaConfBaseException as e:
        fail(f"invalid config: {str(e).splitlines()[0]}")


def stage(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """Decorate a stage body `fn(cfg)` into a Hydra app that goes through the door."""

    def deco(fn: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        @hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config_name)
        @functools.wraps(fn)
        def main(cfg: DictConfig) -> Any:
            from ssah.sweep import pin_multirun_job

            pin_multirun_job(f"ssah.{config_name}")  # a DDP job in a sweep stays in its job dir
            return door(config_name, cfg, run_dir(), fn)

        return main

    return deco


register_world_resolvers()  # every config a stage composes may name a path in a world
