"""Finished runs under a dir: metrics.json, the settings they ran with, their records.

A run dir is what a stage leaves (contract 2): metrics.json, and for Hydra jobs
.hydra/overrides.yaml and hydra.yaml (the choices), and for evaluations records.jsonl (one
row per generation, with `suite`, `prompt_id` and per-judge flags: the paired tests' input,
read through ssah.results like every other reader of per-prompt outcomes).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssah.errors import SsahError
from ssah.results import read_outcomes


@dataclass
class Run:
    """One finished job: where, its settings (Hydra choices + overrides) and metrics."""

    path: Path
    overrides: dict[str, str]
    settings: dict[str, str]
    metrics: dict[str, Any]
    _outcomes: list[dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def outcomes(self) -> list[dict[str, Any]]:
        """Per-prompt outcomes of this run (ssah.results: from records.jsonl, else the
        committed outcomes.jsonl; read once; [] when the run kept neither)."""
        if self._outcomes is None:
            self._outcomes = read_outcomes(self.path)
        return self._outcomes


def parse_overrides(lines: Sequence[str]) -> dict[str, str]:
    """["+a.b=1", "freeze=none"] -> {"a.b": "1", "freeze": "none"} (deletions dropped)."""
    out: dict[str, str] = {}
    for s in lines:
        s = str(s)
        if s.startswith("~") or "=" not in s:
            continue
        k, v = s.split("=", 1)
        out[k.lstrip("+")] = v
    return out


def load_run(metrics_file: Path) -> Run:
    from omegaconf import OmegaConf

    job = metrics_file.parent
    try:
        metrics = json.loads(metrics_file.read_text())
    except ValueError as e:
        raise SsahError(
            f"{metrics_file} is not valid JSON ({e}); delete it and re-run that job."
        ) from None
    overrides: dict[str, str] = {}
    settings: dict[str, str] = {}
    if (job / ".hydra" / "overrides.yaml").is_file():
        overrides = parse_overrides(OmegaConf.load(job / ".hydra" / "overrides.yaml"))  # type: ignore[arg-type]
    if (job / ".hydra" / "hydra.yaml").is_file():
        hy = OmegaConf.load(job / ".hydra" / "hydra.yaml")
        choices = OmegaConf.select(hy, "hydra.runtime.choices") or {}
        settings = {str(k): str(v) for k, v in choices.items() if not str(k).startswith("hydra/")}
    settings.update(overrides)
    return Run(job, overrides, settings, dict(metrics))


def collect(root: str | Path) -> list[Run]:
    """Every metrics.json under root (one per job), in job order."""
    root = Path(root)
    if not root.is_dir():
        raise SsahError(
            f"{root} is not a directory; give a sweep dir (hydra.sweep.dir) or run dir."
        )
    files = [  # parts below root only: root itself may lie under a dir named wandb
        p
        for p in root.rglob("metrics.json")
        if not any(part in ("wandb", ".submitit") for part in p.relative_to(root).parts)
    ]
    if not files:
        raise SsahError(
            f"no metrics.json under {root}; run a sweep into it first (hydra.sweep.dir={root})."
        )
    return [load_run(p) for p in sorted(files, key=_job_order)]


def _job_order(p: Path) -> tuple[Any, ...]:
    return tuple(
        (0, int(x), "") if x.isdigit() else (1, 0, x) for x in p.relative_to(p.anchor).parts
    )


def varying(runs: Sequence[Run], ignore: Sequence[str]) -> list[str]:
    """Override keys whose value differs across runs (the sweep's axes), in first-seen order."""
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r.overrides if k not in keys and k not in ignore]
    return [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]


def sweep_name_of(runs: Sequence[Run], root: Path, given: str | None) -> str:
    """The report's group: given, else the runs' common sweep_name override, else DIR's name."""
    if given:
        return str(given)
    names = {r.overrides.get("sweep_name") or r.settings.get("sweep") for r in runs} - {None}
    return names.pop() if len(names) == 1 else root.resolve().name
