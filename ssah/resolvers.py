"""OmegaConf resolvers: pure functions from config values to paths and names.

None of them builds anything heavy: `${toy:aligned}` is where the toy world is (the stage door
builds it, `ssah.worlds.ensure`); `${standin:...}` is the content-keyed dir of a tiny stand-in
checkpoint, created by `ssah.standin` in seconds the first time it is named.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ssah.errors import SsahError
from ssah.io import CONF_DIR  # noqa: F401  (re-exported: the stage door and compose use it)


def toy_path(which: str, *, _root_: DictConfig) -> str:
    """`${toy:aligned|base|data|tokenizer|root}`: a path in the toy world of `toy:`."""
    from ssah.worlds.toy.cache import locate

    return str(locate(_root_.toy).path(which))


def smollm2_path(which: str, *, _root_: DictConfig) -> str:
    """`${smollm2:base|data|aligned|root}`: a path in the smollm2 world (conf/world/smollm2.yaml,
    or the job's `world:` node)."""
    from ssah.worlds.smollm2.paths import config_of, locate

    return str(locate(config_of(_root_)).path(which))


def standin_model(spec: DictConfig, *, _root_: DictConfig) -> str:
    """`${standin:${model.standin}}`: a tiny random-init checkpoint of that architecture."""
    from ssah.standin import build_model

    if spec is None:
        raise SsahError("this model config has no `standin:` architecture; a dry run needs one.")
    plain = OmegaConf.to_container(spec, resolve=True)
    return str(build_model(plain, Path(_root_.paths.standins)))  # type: ignore[arg-type]


def standin_data(*, _root_: DictConfig) -> str:
    """`${standin_data:}`: one small JSONL that every dataset config can read."""
    from ssah.standin import build_data

    return str(build_data(Path(_root_.paths.standins)))


def sweep_group(sweep_name: str | None, sweep_dir: str | Path | None) -> str | None:
    """The W&B group of a job: the sweep's name when set, else its sweep dir's name."""
    if sweep_name:
        return str(sweep_name)
    if sweep_dir:
        return Path(str(sweep_dir)).name or None
    return None


def sweep_group_resolver(name: str | None = None) -> str | None:
    """`${sweep_group:${oc.select:sweep_name,null}}`: the name given, else (in a multirun job)
    the sweep dir's name, else None (a single run has no group); conf/logger/wandb.yaml."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if name:
        return str(name)
    try:
        hc = HydraConfig.get()
    except ValueError:
        return None
    if hc.mode != RunMode.MULTIRUN:
        return None
    return sweep_group(None, hc.sweep.dir)


def run_id(stamp: str) -> str:
    """`${run_id:${now:...}}`: the run dir's last part. Inside a SLURM job `slurm-<job id>`:
    every task of a multi-task job (srun, DDP ranks) names the same dir, and a requeued job
    runs again in it, so it continues from its checkpoint. Elsewhere the time stamp."""
    job = os.environ.get("SLURM_JOB_ID")
    return f"slurm-{job}" if job else stamp


def register_resolvers() -> None:
    """Register every ssah resolver once per process."""
    for name, fn in (
        ("toy", toy_path),
        ("smollm2", smollm2_path),
        ("sweep_group", sweep_group_resolver),
        ("standin", standin_model),
        ("standin_data", standin_data),
        ("run_id", run_id),
        ("cwd", os.getcwd),  # usable before HydraConfig exists (multirun dirs)
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
