"""Sweep helpers: which jobs of a sweep are complete (resume = skip them), and the sweep's name.

A job is complete when its run dir holds a metrics.json that parses to a non-empty JSON object:
write_metrics writes it atomically as the job's last artifact, so a killed job never leaves a
partial one. `skip_completed(cfg, out_dir)` is what a stage's entry calls first; with
`skip_completed: true` (sweep presets set it) a re-run of the same sweep returns the stored
metrics of finished jobs instead of redoing them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from ssah.io import cache_lock  # noqa: F401  (re-exported: sweeps lock shared caches)
from ssah.resolvers import sweep_group, sweep_group_resolver  # noqa: F401  (re-exported)

METRICS = "metrics.json"


def completed_metrics(out_dir: str | Path) -> dict[str, Any] | None:
    """The job's metrics when it finished, else None (missing, unreadable or empty file)."""
    path = Path(out_dir) / METRICS
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data else None


def skip_completed(cfg: Mapping[str, Any], out_dir: str | Path) -> dict[str, Any] | None:
    """Stored metrics of a finished job when `cfg.skip_completed` is true, else None (run it)."""
    if not bool(cfg.get("skip_completed", False)):
        return None
    done = completed_metrics(out_dir)
    if done is not None:
        print(f"[ssah] skip: {out_dir} already complete (skip_completed=true)", file=sys.stderr)
    return done


def pin_multirun_job(stage_module: str) -> None:
    """In a multirun job, make Lightning's DDP re-launch run this one job, in this job's dir.

    Lightning starts ranks > 0 as `python -m <__main__'s module> <sys.argv[1:]>
    hydra.run.dir=<HydraConfig run.dir>`: in a sweep that would be the whole sweep again (`-m`
    or a preset's hydra.mode=MULTIRUN), into a fresh run dir, and under submitit the module is
    submitit's. So: run.dir := this job's output dir, argv := this job's overrides in RUN mode,
    and __main__'s spec := the stage module. A no-op outside multirun jobs.
    """
    import importlib.util

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict, read_write

    try:
        hc = HydraConfig.get()
    except ValueError:
        return
    if hc.mode != RunMode.MULTIRUN:
        return
    with read_write(hc), open_dict(hc):
        hc.run.dir = hc.runtime.output_dir
    sys.argv = [sys.argv[0], *hc.overrides.task, "hydra.mode=RUN"]
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if main is not None and (spec is None or spec.name != stage_module):
        main.__spec__ = importlib.util.find_spec(stage_module)


class PrepareSweep(Callback):
    """Hydra callback (hydra.callbacks): before any job starts, build the toy world once, so
    parallel jobs (joblib, submitit) do not each build it. Harmless for real models."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        model = OmegaConf.select(config, "model")
        if config.get("toy") is None or model is None:
            return
        if "toy:" not in str(OmegaConf.to_container(model, resolve=False)):
            return  # a real model: nothing to build
        from ssah.resolvers import register_resolvers
        from ssah.worlds.toy.world import ensure_toy

        register_resolvers()
        HydraConfig.instance().set_config(config)  # ${hydra:runtime.cwd} in paths
        ensure_toy(config.toy)
