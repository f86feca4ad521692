"""Judging answers read from a file: judges by name (conf/eval/judges/<name>.yaml), one flag per
judge per answer. Shared by the judge CLI (ssah/judge.py) and the judges audit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssah.errors import SsahError
from ssah.eval.judges import build_judges
from ssah.io import CONF_DIR


def judge_specs(names: list[str]) -> DictConfig:
    """{name: spec} of conf/eval/judges/<name>.yaml for each name asked for."""
    folder = Path(CONF_DIR) / "eval" / "judges"
    known = sorted(p.stem for p in folder.glob("*.yaml"))
    specs: dict[str, Any] = {}
    for name in names:
        if name not in known:
            raise SsahError(f"judges: unknown judge {name!r}; use one of {known}.")
        specs.update(OmegaConf.to_container(OmegaConf.load(folder / f"{name}.yaml")))  # type: ignore[arg-type]
    return OmegaConf.create(specs)


def judge_rows(rows: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """The rows with `judge/<name>` added for every judge (True = complies)."""
    judges = build_judges(judge_specs(names))
    prompts = [r["prompt"] for r in rows]
    prefills = [str(r.get("prefill") or "") for r in rows]
    responses = [r["response"] for r in rows]
    out = [dict(r) for r in rows]
    for name, j in judges.items():
        flags = j.judge_prefilled(prompts, responses, prefills).flags
        for r, f in zip(out, flags, strict=True):
            r[f"judge/{name}"] = bool(f)
    return out
