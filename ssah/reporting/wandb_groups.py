"""`wandb:ENTITY/PROJECT/GROUP` -> a sweep-like dir the report reads like any local sweep.

Downloads the finished runs of an online W&B group into `<download_dir>/GROUP`, one
`<run>/metrics.json` + `.hydra/` per run (overrides rebuilt from the logged config), swapped
in atomically so a failed download never leaves a half-written dir. `log_report` puts a
finished report (tables, plots, claim verdicts) into a W&B run of the sweep's group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssah.errors import SsahError

# Top-level W&B config keys that never name a sweep axis: W&B's own, the choices (read
# separately), where files go and how the run was logged.
WANDB_CONFIG_SKIP = ("_wandb", "hydra_choices", "hydra_overrides", "paths", "logger")


@dataclass(frozen=True)
class WandbGroup:
    """`wandb:ENTITY/PROJECT/GROUP` split into its parts."""

    entity: str
    project: str
    group: str

    @classmethod
    def parse(cls, spec: str) -> WandbGroup:
        parts = spec.removeprefix("wandb:").split("/", 2)
        if len(parts) != 3 or not all(parts):
            raise SsahError(
                f"{spec!r} is not a W&B group; write wandb:ENTITY/PROJECT/GROUP "
                "(GROUP: the sweep_name the runs were logged with)."
            )
        return cls(*parts)

    @property
    def project_path(self) -> str:
        return f"{self.entity}/{self.project}"


@dataclass(frozen=True)
class WandbRun:
    """What the report needs of one finished W&B run, read once so nothing is fetched later."""

    dirname: str
    run_id: str
    metrics: dict[str, Any]
    config: dict[str, Any]


@dataclass(frozen=True)
class GroupDownload:
    """A downloaded group: the sweep-like dir, runs written, runs left out (and why)."""

    group: str
    root: Path
    runs: int
    unfinished: int
    reports: int


def _api() -> Any:
    """The public W&B API client; its own function so tests can put a fake in its place."""
    import wandb

    return wandb.Api()


def _has_api_key() -> bool:
    """A key in the environment or from `wandb login` (netrc), checked without the network."""
    import netrc
    import os
    from urllib.parse import urlparse

    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or ""
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _require_online(spec: str) -> None:
    """Fail before any network call when W&B is offline or has no key to log in with."""
    import os

    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled") or not _has_api_key():
        raise SsahError(
            f"reading W&B group {spec!r} needs online W&B (WANDB_API_KEY set or `wandb login`, "
            "WANDB_MODE not offline); offline, give the sweep dir instead: python -m ssah.report DIR"
        )


def _safe_name(name: str) -> str:
    """A W&B name as one path component (no separators, no leading dot)."""
    import re

    return re.sub(r"[^\w.,=+-]", "_", name).lstrip(".") or "_"


def _summary_metrics(summary: Any) -> dict[str, Any]:
    """A run summary as metrics.json keys: W&B's `_` keys and media (tables, images) dropped."""
    out: dict[str, Any] = {}
    for k, v in summary.items():
        key = str(k)
        if key.startswith("_"):
            continue
        if hasattr(v, "items"):
            sub = dict(v.items())
            if "_type" not in sub:  # nested keys: flatten them back into a/b
                out.update({f"{key}/{kk}": vv for kk, vv in _summary_metrics(sub).items()})
        elif v is None or isinstance(v, int | float | str):
            out[key] = v
    return out


def _fetch_group(g: WandbGroup) -> tuple[list[WandbRun], int, int]:
    """Finished runs of the group (no report runs), plus counts of unfinished and report runs.

    Every network read happens here, so a network or auth error stops before a file is written.
    """
    import requests
    import wandb

    runs: list[WandbRun] = []
    unfinished = reports = 0
    try:
        for run in _api().runs(path=g.project_path, filters={"group": g.group}):
            if getattr(run, "job_type", None) == "report":
                reports += 1
            elif run.state != "finished":
                unfinished += 1
            else:
                name = _safe_name(str(run.name or run.id))
                metrics, config = _summary_metrics(run.summary), dict(run.config)
                runs.append(WandbRun(name, str(run.id), metrics, config))
    except (wandb.errors.Error, requests.RequestException, ValueError) as e:
        cause = " ".join(str(e).split())[:300] or type(e).__name__
        raise SsahError(
            f"could not read W&B group {g.project_path}/{g.group} ({cause}); check the network, "
            "WANDB_API_KEY and that the entity and project exist."
        ) from None
    return _unique_dirnames(runs), unfinished, reports


def _unique_dirnames(runs: Sequence[WandbRun]) -> list[WandbRun]:
    """Run names are not unique in W&B: a repeated name gets its run id appended."""
    from dataclasses import replace

    seen = [r.dirname for r in runs]
    return [
        replace(r, dirname=f"{r.dirname}-{_safe_name(r.run_id)}")
        if seen.count(r.dirname) > 1
        else r
        for r in runs
    ]


def _choices(config: Mapping[str, Any]) -> dict[str, str]:
    """Hydra's chosen config options, as ssah.tracking logs them (`hydra_choices`)."""
    raw = config.get("hydra_choices") or {}
    return {str(k): _value(v) for k, v in raw.items() if not str(k).startswith("hydra/")}


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{'freeze': {'extra_ratio': 0.06}} -> {'freeze.extra_ratio': '0.06'} (Hydra key paths)."""
    out: dict[str, str] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_leaves(v, key + "."))
        else:
            out[key] = _value(v)
    return out


def _value(v: Any) -> str:
    """A config value as a Hydra override writes it (true, null, [1, 2])."""
    import json

    return json.dumps(v) if v is None or isinstance(v, bool | list | dict) else str(v)


def _varying_keys(dicts: Sequence[Mapping[str, str]]) -> list[str]:
    """Keys (first-seen order) whose value, or presence, differs across dicts."""
    keys = list(dict.fromkeys(k for d in dicts for k in d))
    return [k for k in keys if len({d.get(k) for d in dicts}) > 1]


def group_overrides(configs: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Each run's sweep overrides: as logged (`hydra_overrides`), else rebuilt from the configs.

    A choice that differs across runs is an override (freeze=none); so is a config value that
    differs (seed=1, freeze.extra_ratio=0.06), unless it lies under a differing choice, where
    it only follows from that choice.
    """
    choices = [_choices(c) for c in configs]
    leaves = [
        _leaves(
            {k: v for k, v in c.items() if k not in WANDB_CONFIG_SKIP and not k.startswith("_")}
        )
        for c in configs
    ]
    groups = _varying_keys(choices)
    values = [k for k in _varying_keys(leaves) if not any(k.startswith(f"{g}.") for g in groups)]
    rebuilt = [
        [f"{k}={ch[k]}" for k in groups if k in ch] + [f"{k}={lv[k]}" for k in values if k in lv]
        for ch, lv in zip(choices, leaves, strict=True)
    ]
    # Runs that logged their command-line overrides (ssah.tracking) need no rebuilding.
    return [
        [str(o) for o in c["hydra_overrides"]] if c.get("hydra_overrides") else r
        for c, r in zip(configs, rebuilt, strict=True)
    ]


def _write_job(job: Path, run: WandbRun, overrides: Sequence[str]) -> None:
    """One job dir as a Hydra sweep leaves it: metrics.json and .hydra/ (what load_run reads)."""
    from omegaconf import OmegaConf

    from ssah.metrics import write_metrics

    (job / ".hydra").mkdir(parents=True)
    write_metrics(job, run.metrics)
    OmegaConf.save(OmegaConf.create(list(overrides)), job / ".hydra" / "overrides.yaml")
    hydra = {"hydra": {"runtime": {"choices": _choices(run.config)}}}
    OmegaConf.save(OmegaConf.create(hydra), job / ".hydra" / "hydra.yaml")


def _write_group(dest: Path, runs: Sequence[WandbRun]) -> None:
    """Write every job into a temp dir beside dest, then swap it in: never a half-written dest."""
    import os
    import shutil
    import tempfile

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    try:
        for run, ov in zip(runs, group_overrides([r.config for r in runs]), strict=True):
            _write_job(tmp / run.dirname, run, ov)
        if dest.exists():
            dest.rename(old)
        tmp.rename(dest)
    except BaseException:
        if old.exists() and not dest.exists():
            old.rename(dest)  # the previous download stays as it was
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def from_wandb_group(spec: str, download_dir: str | Path) -> GroupDownload:
    """`wandb:ENTITY/PROJECT/GROUP` -> download_dir/GROUP, a dir `build` reads like a sweep."""
    g = WandbGroup.parse(spec)
    _require_online(spec)
    runs, unfinished, reports = _fetch_group(g)
    if not runs:
        raise SsahError(
            f"W&B group {g.project_path}/{g.group} has no finished runs ({unfinished} unfinished); "
            "check the group name (the runs' sweep_name) or wait for the runs to finish."
        )
    dest = Path(download_dir) / _safe_name(g.group)
    _write_group(dest, runs)
    return GroupDownload(g.group, dest, len(runs), unfinished, reports)


def log_report(cfg: Any, result: Mapping[str, Any]) -> None:
    """The tables and PNGs into a W&B run (offline by default) of the sweep's group."""
    from omegaconf import open_dict

    from ssah.tracking import finish, log_image, log_table, make_logger

    if cfg.get("logger") is None:
        return
    with open_dict(cfg):
        cfg.logger.group = result["group"]
        cfg.logger.job_type = "report"
    out = Path(cfg.wandb_dir)
    out.mkdir(parents=True, exist_ok=True)
    logger = make_logger(cfg, out)
    log_table(logger, "report", result["header"], result["body"])
    for p in result["pngs"]:
        log_image(logger, p.stem, p)
    summary: dict[str, Any] = {"report/runs": len(result["runs"])}
    for r in result.get("claims", []):
        if r.verdict != "not run":
            summary[f"claims/{r.claim.id}/effect"] = r.effect
            summary[f"claims/{r.claim.id}/ci_low"] = r.ci_low
            summary[f"claims/{r.claim.id}/ci_high"] = r.ci_high
            summary[f"claims/{r.claim.id}/verdict"] = r.verdict
    finish(logger, summary)
